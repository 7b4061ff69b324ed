//! The agent: wires configuration, data dir, network, membership and control socket together, and
//! owns the one event loop that drives them.
//!
//! Start-up is ordered so that a refusal writes nothing: every check that can fail on operator input
//! (config, cluster key, data dir lock, listen ports) runs before the first byte goes to the data dir.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dci_proto::archive::ArchiveId;
use dci_proto::control::{ChannelInfo, EventInfo, MemberInfo};
use dci_proto::notice::{FailureNotice, Level, Part, NOTICE_APP};
use dci_proto::Envelope;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, mdns, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, watch};

use crate::config::{one_line, Config};
use crate::control::{self, Query};
use crate::datadir::{DataDir, DataDirError};
use crate::degradation::{Detector, Transition};
use crate::events::{Event, EventHub, EventKind};
use crate::failover::degraded::{Decision, Helpers, Helping, OnDegraded};
use crate::failover::driver::{self as failover, Effect, Failover, Wire};
use crate::failover::steps::Kind as StepKind;
use crate::membership::mesh::{self, MemberMeta, MeshPacket, MeshSwim, Signer};
use crate::membership::swim::{Liveness, Output, Timer};
use crate::membership::Role;
use crate::net::backoff::Backoff;
use crate::net::frames::{Frames, Inbound, Lane};
use crate::net::{self, Behaviour, BehaviourEvent, NetError, PROTOCOL_VERSION};
use crate::notice::{self, Dedup};
use crate::resources::{Resources, Sampler};
use crate::router::{self, MessengerHandle};
use crate::timers::TimerQueue;

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
    /// The backup settings an operator changed, kept in the data dir, cannot be read.
    #[error("cannot apply the kept backup settings {reason} (fix or remove the file)")]
    Settings {
        /// The file and why.
        reason: String,
    },
    /// The web console could not be started.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// `[packages] run_as` is set but dcid cannot change user.
    #[error("[packages] run_as = \"{0}\" needs dcid to run as root")]
    RunAsNeedsRoot(String),
}

/// Failure notices kept for `dcish notices`; the oldest go first.
const RECENT_NOTICES: usize = 256;

/// The file in the data dir that keeps an operator's backup settings changes.
pub const BACKUP_OVERRIDES: &str = "backup-settings.json";

/// A started agent, ready to [`Agent::run`].
pub struct Agent {
    config: Config,
    local_id: PeerId,
    swarm: Swarm<Behaviour>,
    /// Block transfers, on connections of their own (see `crate::net`).
    data_swarm: Swarm<net::DataBehaviour>,
    /// Membership and election messages to each peer, on long-lived streams.
    frames: Frames,
    /// What those streams bring in.
    frames_in: mpsc::Receiver<Inbound>,
    swim: MeshSwim,
    /// The core's timers; a stale one is a no-op when it fires, so none is ever cancelled.
    timers: TimerQueue<Timer<PeerId>>,
    db: sled::Db,
    /// The incarnation last written to the database (see [`next_incarnation`]).
    saved_incarnation: u64,
    data_dir: DataDir,
    queries: mpsc::Receiver<Query>,
    /// Why the data dir could not be written, from the disk checker task.
    disk_faults: mpsc::Receiver<String>,
    started: Instant,
    connected: HashSet<PeerId>,
    seed_backoff: Backoff<Multiaddr>,
    /// Seeds a dial has reached; the others are retried until they are (or the mesh is lost).
    seeds_reached: HashSet<Multiaddr>,
    /// Seed dials in flight, by connection.
    seed_dials: HashMap<ConnectionId, Multiaddr>,
    events: EventHub,
    notices_seen: Dedup,
    /// The notices logged lately, oldest first, for `dcish notices` and the console.
    recent_notices: std::collections::VecDeque<dci_proto::control::NoticeInfo>,
    sampler: Sampler,
    detector: Detector,
    /// Members whose metadata says they are degraded, to publish the change once.
    degraded_members: HashSet<PeerId>,
    counters: Counters,
    /// The envelope router's task: notices go out through it.
    messenger: MessengerHandle,
    /// The mesh as the router sees it; republished when membership or connections change.
    view: watch::Sender<Arc<router::core::View>>,
    /// When `view` was last rebuilt, and whether a change waits for the next rebuild.
    view_synced: Instant,
    view_pending: bool,
    /// Failure notices the router delivered here, with the peer that sent them.
    notices_in: mpsc::Receiver<(Envelope, PeerId)>,
    /// Members the router could not open a stream to: dialled at their announced addresses.
    dials_in: mpsc::Receiver<PeerId>,
    /// The replication service's requests in flight, and its channels.
    replication: crate::replication::Link,
    /// The backup settings in force (the config file's, with the operator's changes), which say
    /// where each blade's data set lives.
    backup_settings: Arc<std::sync::RwLock<crate::replication::settings::BackupConfig>>,
    /// The package installer: what it installs follows the blade this node acts as.
    installer: Arc<crate::package::install::Installer>,
    /// The election driver: seat table, claims, leases.
    failover: Failover,
    /// The blades this node is restoring after winning them, with the epoch won.
    restoring: BTreeMap<String, u64>,
    /// Takeover restores that finished: blade, epoch, and the restore's answer.
    takeovers: mpsc::Receiver<Takeover>,
    takeover_tx: mpsc::Sender<Takeover>,
    /// Hand-overs whose last backup finished: the blade and the node to hand it to.
    handovers: mpsc::Receiver<(String, PeerId)>,
    handover_tx: mpsc::Sender<(String, PeerId)>,
    /// Down blades already alerted for, by (blade, epoch): one alert per outage.
    no_spare_alerted: HashSet<(String, u64)>,
    /// When to look for down blades with no spare next.
    next_no_spare_check: Duration,
    /// The blades whose own peerlets (from their data sets' [`BLADE_PEERLETS`]) are registered
    /// here, and for each, the app types registered for it.
    blade_peerlets: BTreeMap<String, Vec<String>>,
    /// What this node does on its own sustained degradation (re-read on SIGHUP).
    on_degraded: OnDegraded,
    /// The helpers of the blade this node holds.
    helpers: Helpers<PeerId>,
    /// The blade this node helps, if any.
    helping: Option<Helping<PeerId>>,
    /// Helpers' restores that finished: blade, epoch, and the error if it failed.
    help_restores: mpsc::Receiver<HelpRestore>,
    help_restore_tx: mpsc::Sender<HelpRestore>,
}

/// A helper's restore, finished: the blade, the epoch it helps at, and why it failed.
/// A helper's copy made or brought up to date: the blade, the epoch helped at, and the archive
/// the copy now holds (none: the blade has no complete archive), or why it failed.
type HelpRestore = (String, u64, Result<Option<ArchiveId>, String>);

/// Where a blade's data set carries the external peerlets that belong to the blade: the node
/// acting as the blade registers them, so they follow the blade through a takeover or a move
/// (restored with its files) and stop on a node that no longer acts as it.
pub const BLADE_PEERLETS: &str = ".dci/peerlets";

/// How long a blade's holder must have been gone, with no spare to take it, before the alert:
/// long enough for a spare that is only slow to claim it first.
const NO_SPARE_GRACE: Duration = Duration::from_secs(5);

/// A takeover's restore, finished: the blade, the epoch won, and what the restore answered.
type Takeover = (String, u64, Result<dci_proto::Payload, (String, String)>);

/// What the agent refused or relayed, for `dcish status` (the membership core counts forged
/// announcements itself).
#[derive(Debug, Default)]
struct Counters {
    membership_malformed: u64,
    membership_oversized: u64,
    membership_bad_streams: u64,
    envelopes_refused: u64,
    notices_sent: u64,
    notices_received: u64,
    /// Copies of this node's notices that a member never got (it died or its connection
    /// dropped meanwhile): the router's answers to them.
    notices_undelivered: u64,
    /// Blades this node won from another node (each restored from the holders).
    takeovers: u64,
    /// Blades this node handed over on an operator's `dcish failover`.
    handovers: u64,
}

/// The router's view is rebuilt at most this often (see [`Agent::view_changed`]).
const VIEW_MIN_GAP: Duration = Duration::from_millis(100);

/// Resource figures are re-announced when one moves by this many points.
const RESOURCE_ANNOUNCE_POINTS: u8 = 5;

impl Agent {
    /// Checks everything, binds the ports, then creates the data dir, identity, database and
    /// control socket. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Agent, StartError> {
        if let Some(u) = &config.packages.run_as {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err(StartError::RunAsNeedsRoot(u.user.clone()));
            }
        }
        let mut data_dir = DataDir::inspect(&config.data_dir)?;
        let (key, new_key) = match data_dir.read_identity()? {
            Some(key) => (key, false),
            None => (Keypair::generate_ed25519(), true),
        };
        let local_id = key.public().to_peer_id();
        let mut swarm = net::build_swarm(key.clone(), config.cluster_key, config.mdns)?;
        let mut data_swarm = net::build_data_swarm(key.clone())?;
        let listen_err = |addr: &Multiaddr, e| StartError::Listen {
            addr: addr.clone(),
            reason: listen_reason(&e),
        };
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| listen_err(addr, e))?;
        }
        for addr in &config.data_listen {
            data_swarm
                .listen_on(addr.clone())
                .map_err(|e| listen_err(addr, e))?;
        }

        let console = match config.console.http {
            Some(addr) => Some(crate::console::bind(addr).await?),
            None => None,
        };

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
        let incarnation = next_incarnation(&db, unix_ms()).map_err(db_err)?;
        let failover = Failover::open(
            &db,
            failover::Settings {
                me: local_id,
                name: config.name.clone(),
                role: config.role,
                zone: config.zone.clone(),
                has_seeds: !config.join.is_empty(),
                election: crate::failover::election::ElectionConfig::default(),
                extra_blades: config.extra_blades,
            },
            rand::random(),
            Duration::ZERO,
        )
        .map_err(|e| StartError::Database {
            path: data_dir.db_path(),
            reason: e.to_string(),
        })?;
        let listener = control::bind(&data_dir.socket_path())?;
        let (query_tx, queries) = mpsc::channel(64);
        let (fault_tx, disk_faults) = mpsc::channel(4);
        tokio::spawn(check_disk(
            data_dir.path().join("health-check"),
            config.degradation.sample_interval,
            fault_tx,
        ));
        let (frames, frames_in) = Frames::start(swarm.behaviour().stream.new_control());
        let (view, view_rx) = watch::channel(Arc::new(router::core::View {
            local: local_id.to_string(),
            local_blade: Some(config.name.clone()),
            ..Default::default()
        }));
        let (notice_tx, notices_in) = mpsc::channel(256);
        let (dial_tx, dials_in) = mpsc::channel(256);
        // Off by default: without the channel the router refuses an unknown app at once.
        let (retrieve_tx, retrieve_rx) = mpsc::channel(64);
        let on_demand = config.packages.on_demand;
        let (messenger, messenger_handle) = router::Messenger::new(router::Setup {
            local: local_id,
            blade: Some(config.name.clone()),
            control: swarm.behaviour().stream.new_control(),
            view: view_rx,
            notices: notice_tx,
            dials: dial_tx,
            db: Some(db.clone()),
            config: config.messaging.clone(),
            fs: config.fs.clone(),
            retrieve: on_demand.then_some(retrieve_tx),
        });
        tokio::spawn(messenger.run());
        if let Some(listener) = console {
            let control = crate::console::api::Control::new(
                local_id.to_string(),
                config.name.clone(),
                query_tx.clone(),
                messenger_handle.clone(),
            );
            tokio::spawn(crate::console::serve(
                listener,
                config.console.clone(),
                control,
            ));
        }
        tokio::spawn(control::serve(
            listener,
            local_id.to_string(),
            query_tx,
            messenger_handle.clone(),
        ));

        let installer = std::sync::Arc::new(
            crate::package::install::Installer::open(
                &db,
                crate::package::install::Settings {
                    trusted: config.packages.trusted.clone(),
                    platform: crate::package::platform(),
                    root: config.packages.root.clone(),
                    max_step: config.packages.max_step,
                    on_demand_signers: config.packages.on_demand_signers.clone(),
                    run_as: config.packages.run_as.clone(),
                },
                Some(messenger_handle.clone()),
            )
            .map_err(|reason| StartError::Database {
                path: data_dir.db_path(),
                reason,
            })?,
        );
        // Installed peerlets are registered again: the host starts with only the configured ones.
        tokio::spawn({
            let installer = installer.clone();
            async move { installer.reregister().await }
        });
        let (replication, backup_settings, service) =
            start_replication(&config, &db, &data_dir, local_id, installer.clone())?;
        let retrieve = on_demand.then_some(retrieve_rx);
        let mut sampler = Sampler::new(data_dir.path());
        let meta = MemberMeta {
            name: config.name.clone(),
            role: config.role,
            zone: config.zone.clone(),
            addrs: Vec::new(),
            data_addrs: Vec::new(),
            version: env!("CARGO_PKG_VERSION").into(),
            resources: sampler.sample(),
            degraded: false,
            blade: None,
            helpers: Vec::new(),
            extra: failover.extra_blades(),
        };
        let seed = rand::random();
        let swim = MeshSwim::new(
            local_id,
            incarnation,
            meta,
            Signer::new(key),
            config.membership.clone(),
            seed,
            Duration::ZERO,
        );
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
        let (takeover_tx, takeovers) = mpsc::channel(4);
        let (handover_tx, handovers) = mpsc::channel(4);
        let (help_restore_tx, help_restores) = mpsc::channel(4);
        let mut agent = Agent {
            on_degraded: config.on_degraded,
            helpers: Helpers::default(),
            helping: None,
            help_restores,
            help_restore_tx,
            no_spare_alerted: HashSet::new(),
            next_no_spare_check: Duration::ZERO,
            blade_peerlets: BTreeMap::new(),
            handovers,
            handover_tx,
            failover,
            restoring: BTreeMap::new(),
            takeovers,
            takeover_tx,
            events: EventHub::default(),
            notices_seen: Dedup::default(),
            recent_notices: std::collections::VecDeque::new(),
            sampler,
            detector: Detector::new(config.degradation.clone()),
            degraded_members: HashSet::new(),
            counters: Counters::default(),
            replication,
            backup_settings,
            installer,
            seed_backoff: Backoff::default(),
            seeds_reached: HashSet::new(),
            seed_dials: HashMap::new(),
            connected: HashSet::new(),
            started: Instant::now(),
            timers: TimerQueue::default(),
            local_id,
            config,
            swarm,
            data_swarm,
            frames,
            frames_in,
            swim,
            db,
            saved_incarnation: incarnation,
            data_dir,
            queries,
            disk_faults,
            messenger: messenger_handle,
            view,
            view_synced: Instant::now(),
            view_pending: false,
            notices_in,
            dials_in,
        };
        let own = agent.swim.meta().clone();
        agent.failover.set_own(&own);
        agent.apply_outputs();
        agent.sync_view();
        service(agent.events.subscribe(), retrieve);
        Ok(agent)
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.local_id
    }

    /// A handle to this agent's envelope router, for in-process clients (benchmarks, tests).
    pub fn messenger(&self) -> MessengerHandle {
        self.messenger.clone()
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Subscribes to membership events (joined, alive, suspect, dead, left, metadata-changed,
    /// link-unreachable, degraded, recovered), for failover and replication.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Runs until `shutdown` resolves, then leaves the mesh gracefully.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // Seeds are (re)dialled on their own, slower rhythm.
        let mut redial = tokio::time::interval(Duration::from_millis(500));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sample = tokio::time::interval(self.config.degradation.sample_interval);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!("cannot watch for SIGHUP ({e}): [failover] and [degradation] are read at start only"))
            .ok();
        tokio::pin!(shutdown);
        loop {
            let due = match (self.timers.next_due(), self.failover.due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = due
                .map(|at| self.started + at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next.into()) => self.fire_timers(),
                _ = redial.tick() => self.redial_seeds(),
                _ = sample.tick() => self.sample_resources(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                event = self.data_swarm.select_next_some() => self.on_data_event(event),
                Some(inbound) = self.frames_in.recv() => self.on_frames(inbound),
                Some(query) = self.queries.recv() => self.on_query(query),
                Some(reason) = self.disk_faults.recv() => self.on_disk_fault(reason),
                Some((env, peer)) = self.notices_in.recv() => self.on_notice(env, peer),
                Some(peer) = self.dials_in.recv() => self.dial_member(peer),
                Some(cmd) = self.replication.next_command() => self.on_replication(cmd),
                Some(done) = self.takeovers.recv() => self.on_takeover_done(done),
                Some((blade, to)) = self.handovers.recv() => self.release(blade, to),
                Some(done) = self.help_restores.recv() => self.on_help_restored(done),
                Some(()) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                    self.reload_live()
                }
                _ = tokio::time::sleep_until((self.view_synced + VIEW_MIN_GAP).into()),
                    if self.view_pending => self.sync_view(),
            }
        }
        self.leave().await;
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(timer) = self.timers.pop_due(now) {
            self.swim.handle_timer(timer, now);
        }
        self.apply_outputs();
        if self.failover.due().is_some_and(|at| at <= now) {
            let effects = self.failover.handle_tick(now);
            self.apply_effects(effects);
        }
        if now >= self.next_no_spare_check {
            self.next_no_spare_check = now + Duration::from_secs(1);
            self.alert_down_blades(now);
        }
    }

    /// A blade whose holder is gone and that no live spare may take stays down: say so once per
    /// outage, naming the blade (an operator may add a spare, or bring the node back).
    fn alert_down_blades(&mut self, now: Duration) {
        let down: Vec<(String, u64, PeerId)> = self
            .failover
            .seats()
            .iter()
            .filter(|(_, seat)| {
                self.swim.member(&seat.holder).is_some_and(|m| {
                    matches!(m.liveness, Liveness::Dead | Liveness::Left)
                        && now.saturating_sub(m.since()) >= NO_SPARE_GRACE
                })
            })
            .map(|(b, s)| (b.clone(), s.epoch, s.holder))
            .collect();
        for (blade, epoch, holder) in down {
            if self.failover.best_candidate(&blade).is_some()
                || !self.no_spare_alerted.insert((blade.clone(), epoch))
            {
                continue;
            }
            let detail = format!(
                "blade {blade} is down: its holder {} ({holder}) is gone since epoch {epoch} and no live spare may take it; add a spare, allow an active node to take it ([failover] extra_blades), or bring the node back",
                self.member_name(&holder)
            );
            tracing::error!("{detail}");
            self.broadcast_notice(FailureNotice {
                level: Level::Serious,
                part: Part::Node,
                id: format!("{blade}/no-spare/{epoch}"),
                name: Some(blade),
                address: None,
                at_ms: unix_ms(),
                detail,
            });
        }
    }

    /// Writes the incarnation when it changed, so that the next run starts above it (flushed when
    /// `flush`, as on leaving; otherwise within sled's flush interval).
    fn save_incarnation(&mut self, flush: bool) {
        let inc = self.swim.incarnation();
        if inc == self.saved_incarnation {
            return;
        }
        let saved = self.db.open_tree("meta").and_then(|meta| {
            meta.insert("incarnation", &inc.to_be_bytes())?;
            if flush {
                meta.flush()?;
            }
            Ok(())
        });
        match saved {
            Ok(()) => self.saved_incarnation = inc,
            Err(e) => tracing::warn!("could not save the incarnation: {e}"),
        }
    }

    /// Carries out what the membership core asked for.
    fn apply_outputs(&mut self) {
        self.save_incarnation(false);
        let outputs: Vec<_> = self.swim.drain_outputs().collect();
        let mut touched = Vec::new();
        for output in outputs {
            match output {
                Output::Send(to, packet) => self.send_packet(to, &packet),
                Output::SetTimer(at, timer) => self.timers.push(at, timer),
                // A moot timer does nothing when it fires; an agent has a few dozen.
                Output::CancelTimer(_) => {}
                Output::Joined(id) => {
                    touched.push(id);
                    self.log_change(id, Liveness::Alive);
                    self.publish(id, EventKind::Joined, String::new());
                }
                Output::Changed(id, liveness) => {
                    touched.push(id);
                    self.log_change(id, liveness);
                    let kind = match liveness {
                        Liveness::Alive => EventKind::Alive,
                        Liveness::UnreachableLink => EventKind::LinkUnreachable,
                        Liveness::Suspect => EventKind::Suspect,
                        Liveness::Dead => EventKind::Dead,
                        Liveness::Left => EventKind::Left,
                    };
                    self.publish(id, kind, String::new());
                }
                Output::MetaChanged(id) => {
                    touched.push(id);
                    self.on_meta_changed(id)
                }
                Output::DeclaredDead(id) => self.declare_dead(id),
            }
        }
        // Most steps (probes, acks, renewals) change no member; a step that does is seen by the
        // router at once, so that a member listed alive is also routable.
        if !touched.is_empty() {
            self.sync_view();
        }
        self.feed_members(&touched);
    }

    /// Tells the election driver how membership sees these members now, in one batch.
    fn feed_members(&mut self, ids: &[PeerId]) {
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(m) = self.swim.member(id) else {
                continue;
            };
            let up = matches!(
                m.liveness,
                Liveness::Alive | Liveness::UnreachableLink | Liveness::Suspect
            );
            views.push((*id, failover::member_view(up, &m.meta)));
            if !up {
                self.helper_gone(*id);
            }
        }
        match self.failover.handle_members(&views, self.now()) {
            Ok(effects) => self.apply_effects(effects),
            Err(e) => tracing::error!("{e}; {} members not recorded for quorums", views.len()),
        }
    }

    /// Carries out what the election driver asked for, in order.
    fn apply_effects(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(to, bytes) => {
                    // A member membership holds dead or gone is not dialled again and again: to
                    // the core this is a lost message, which it is built to survive.
                    let gone = self
                        .swim
                        .member(&to)
                        .is_some_and(|m| matches!(m.liveness, Liveness::Dead | Liveness::Left));
                    if gone {
                        continue;
                    }
                    self.send_frame(Lane::Election, to, bytes);
                }
                Effect::TakeOver {
                    blade,
                    epoch,
                    restore: true,
                } => self.take_over(blade, epoch),
                Effect::TakeOver { restore: false, .. } => {}
                Effect::Stopped {
                    blade,
                    epoch,
                    holder,
                } => self.stopped_acting(blade, epoch, holder),
                Effect::HandOverAsked { from, blade, to } => {
                    tracing::warn!(%blade, from = %self.member_name(&from), to = %self.member_name(&to), "asked to hand the blade over");
                    self.hand_over(blade, to);
                }
                Effect::Help { from, what } => self.on_help(from, what),
                Effect::Changed => {
                    let seats = self.failover.seats().iter();
                    let acting = self.failover.acting().map(|(b, _)| b.clone());
                    let hosted = self.failover.hosted().keys().cloned().collect();
                    self.replication.set_seats(
                        seats.map(|(b, s)| (b.clone(), (s.holder, s.epoch))),
                        acting,
                        hosted,
                    );
                    // Helpers serve one seat: a new one (or none) releases them.
                    let old = self.helpers.ready().map(|((b, e), _)| (b.clone(), *e));
                    let released = self.helpers.sync(self.failover.acting());
                    if let Some((blade, epoch)) = old {
                        self.unhelp(&blade, epoch, released, "the seat changed");
                    }
                    self.publish_seat();
                    self.sync_blade_peerlets();
                }
            }
        }
    }

    /// An operator's `dcish failover`: finds the holder and the successor, and asks the holder
    /// to hand the blade over (this node, or another through `/dci/election/1`).
    fn declare_failover(
        &mut self,
        blade: String,
        to: Option<String>,
    ) -> Result<dci_proto::control::HandoverInfo, (String, String)> {
        let Some(seat) = self.failover.seats().get(&blade).copied() else {
            return Err(("no-seat".into(), format!("no node holds blade {blade}")));
        };
        let target = match &to {
            Some(name) => {
                let found = if *name == self.config.name {
                    Some(self.local_id)
                } else {
                    self.swim
                        .members()
                        .find(|(_, m)| m.meta.name == *name)
                        .map(|(id, _)| id)
                };
                match found {
                    Some(id) if self.failover.is_candidate(&id) => id,
                    Some(_) => {
                        return Err((
                            "not-a-spare".into(),
                            format!("{name} is not a live spare holding no blade, nor an active node allowed another ([failover] extra_blades)"),
                        ))
                    }
                    None => return Err(("no-such-node".into(), format!("no member named {name}"))),
                }
            }
            None => self.failover.best_candidate(&blade).ok_or_else(|| {
                (
                    "no-spare".into(),
                    format!(
                        "no live spare, nor an active node allowed another, may take blade {blade}"
                    ),
                )
            })?,
        };
        if seat.holder == self.local_id {
            self.hand_over(blade.clone(), target);
        } else {
            let up = self.swim.member(&seat.holder).is_some_and(|m| {
                matches!(
                    m.liveness,
                    Liveness::Alive | Liveness::UnreachableLink | Liveness::Suspect
                )
            });
            if !up {
                return Err((
                    "holder-down".into(),
                    format!(
                        "the holder of {blade} is down: the mesh elects its successor by itself"
                    ),
                ));
            }
            let bytes = failover::encode_wire(&failover::Wire::HandOver {
                blade: blade.clone(),
                to: target,
            });
            self.apply_effects(vec![Effect::Send(seat.holder, bytes)]);
        }
        Ok(dci_proto::control::HandoverInfo {
            blade,
            holder: seat.holder.to_string(),
            epoch: seat.epoch,
            to: target.to_string(),
            to_name: self.member_name(&target),
        })
    }

    /// An operator's `dcish forget`: `node` (a name or id) no longer counts in quorums here,
    /// and every live member is told to do the same.
    fn forget(&mut self, node: &str) -> Result<(String, String), (String, String)> {
        let by_name = self
            .failover
            .members()
            .find(|(id, _)| self.member_name(id) == node)
            .or_else(|| {
                let id: PeerId = node.parse().ok()?;
                self.failover.members().find(|(m, _)| *m == id)
            });
        let Some((id, alive)) = by_name else {
            return Err((
                "no-such-node".into(),
                format!("{node} is not a member that counts in quorums"),
            ));
        };
        if alive {
            return Err((
                "alive".into(),
                format!("{node} is alive: only a dead or departed member can be forgotten"),
            ));
        }
        match self.failover.forget(id) {
            Ok(true) => {}
            Ok(false) => return Err(("alive".into(), format!("{node} is alive"))),
            Err(e) => return Err(("database".into(), e.to_string())),
        }
        tracing::warn!(member = %self.member_name(&id), %id, "forgotten: no longer counts in quorums");
        let bytes = failover::encode_wire(&failover::Wire::Forget { node: id });
        let live: Vec<PeerId> = self
            .failover
            .members()
            .filter(|(_, alive)| *alive)
            .map(|(m, _)| m)
            .collect();
        let sends = live
            .into_iter()
            .map(|to| Effect::Send(to, bytes.clone()))
            .collect();
        self.apply_effects(sends);
        Ok((id.to_string(), self.member_name(&id)))
    }

    /// Hands `blade`, held here, over to `to`: first the `[moves] pre_command`, if any, then, when
    /// the blade's data set is here, a last backup pushed to the holders, so that the successor
    /// restores what is here now. The hand-over goes on if either fails: the operator declared
    /// this node failed, or asked for the move.
    fn hand_over(&mut self, blade: String, to: PeerId) {
        let Some(seat) = self
            .failover
            .seats()
            .get(&blade)
            .filter(|s| s.holder == self.local_id)
            .copied()
        else {
            tracing::warn!(%blade, "asked to hand over a blade this node does not hold");
            return;
        };
        let hooks = self.config.moves.clone();
        // The blade's archives go on under its name wherever it is held, so its holder (its own
        // node, or one that took it over) pushes a last one.
        let backup = self.blade_root(&blade).is_some();
        if hooks.pre.is_empty() && !backup {
            return self.release(blade, to);
        }
        let env = [
            ("DCI_BLADE", blade.clone()),
            ("DCI_EPOCH", seat.epoch.to_string()),
            ("DCI_TO", self.member_name(&to)),
        ];
        let backups = self.replication.controller();
        let done = self.handover_tx.clone();
        tokio::spawn(async move {
            if !hooks.pre.is_empty() {
                match crate::hook::run(&hooks.pre, &env, hooks.timeout).await {
                    Ok(()) => tracing::info!(%blade, "pre-hand-over command done"),
                    Err(e) => tracing::error!(%blade, "pre-hand-over command failed: {e}"),
                }
            }
            if backup {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let now = dci_proto::backup::BackupRequest::Now {
                    blade: Some(blade.clone()),
                    wait: true,
                };
                let _ = backups
                    .send((crate::replication::Operator::Backup(now), tx))
                    .await;
                match rx.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((code, msg))) => {
                        tracing::error!(%blade, "last backup before the hand-over failed ({code}): {msg}")
                    }
                    Err(_) => {
                        tracing::error!(%blade, "last backup before the hand-over: the backup service stopped")
                    }
                }
            }
            let _ = done.send((blade, to)).await;
        });
    }

    /// Stops acting as `blade` and lets `to` claim it.
    fn release(&mut self, blade: String, to: PeerId) {
        tracing::warn!(%blade, to = %self.member_name(&to), "releasing the blade");
        self.counters.handovers += 1;
        let effects = self.failover.release(&blade, to, self.now());
        self.apply_effects(effects);
    }

    /// This node won `blade` from another node: the backup service restores the blade's latest
    /// archive from its holders into this node's backup root (or `<data-dir>/blades/BLADE`
    /// without one), the same path as `dcish restore`, and answers; it adopts the blade's
    /// archives after, while this node serves the blade.
    fn take_over(&mut self, blade: String, epoch: u64) {
        tracing::warn!(%blade, epoch, "taking the blade over: restoring its data from its holders");
        self.counters.takeovers += 1;
        self.replication.takeover_steps().begin(
            &blade,
            epoch,
            format!("won at epoch {epoch} by a majority of the members"),
        );
        self.restoring.insert(blade.clone(), epoch);
        let args = dci_proto::backup::RestoreArgs {
            blade: blade.clone(),
            archive: None,
            paths: Vec::new(),
            to: None,
            on: None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.replication
            .control((crate::replication::Operator::TakeOver(args), tx));
        let done = self.takeover_tx.clone();
        tokio::spawn(async move {
            let answer = rx
                .await
                .unwrap_or_else(|_| Err(("stopping".into(), "the backup service stopped".into())));
            let _ = done.send((blade, epoch, answer)).await;
        });
    }

    /// Where `blade`'s data set lives on this node, if it has one (where a takeover restores it).
    fn blade_root(&self, blade: &str) -> Option<std::path::PathBuf> {
        self.backup_settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .data_set(&self.config.name, blade)
    }

    /// Registers the peerlets of the blades this node serves (the one it acts as, those it
    /// hosts) or helps (once its data is restored), and unregisters those of a blade it no
    /// longer serves. Peerlets are found by app type: a hosted blade's app that a blade served
    /// here already has is not registered for it (one app type, one peerlet on a node).
    fn sync_blade_peerlets(&mut self) {
        let restored = |b: &String| !self.restoring.contains_key(b);
        let held = self
            .failover
            .acting()
            .map(|(b, _)| b.clone())
            .filter(restored);
        let helped = self
            .helping
            .as_ref()
            .filter(|h| h.ready)
            .map(|h| h.blade.clone());
        // The blade this node acts as (or helps) first: among blades registered in one call, its
        // apps go before a hosted blade's (one registered earlier keeps its apps).
        let mut wanted: Vec<(String, Option<std::path::PathBuf>)> = match (&held, &helped) {
            (Some(b), _) => vec![(b.clone(), self.blade_root(b))],
            (None, Some(b)) => vec![(b.clone(), Some(self.help_dir(b)))],
            (None, None) => Vec::new(),
        };
        for b in self.failover.hosted().keys().filter(|b| restored(b)) {
            wanted.push((b.clone(), self.blade_root(b)));
        }
        // What is installed here is kept with the blade this node acts as, not one it only helps.
        let home = held.as_ref().and_then(|b| self.blade_root(b));
        self.installer.set_blade_home(home);
        let gone: Vec<String> = self
            .blade_peerlets
            .keys()
            .filter(|b| !wanted.iter().any(|(w, _)| w == *b))
            .cloned()
            .collect();
        let mut old = Vec::new();
        for blade in gone {
            old.extend(self.blade_peerlets.remove(&blade).unwrap_or_default());
        }
        let mut new = Vec::new();
        for (blade, root) in wanted {
            if self.blade_peerlets.contains_key(&blade) {
                continue;
            }
            let mut found = Vec::new();
            if let Some(dir) = root
                .as_ref()
                .map(|r| r.join(BLADE_PEERLETS))
                .filter(|d| d.is_dir())
            {
                let (manifests, bad) = crate::peerlet_host::external::Manifest::scan(&dir);
                for e in bad {
                    tracing::warn!(%blade, "{e}; that peerlet of the blade is not available");
                }
                for m in manifests {
                    let taken = self
                        .blade_peerlets
                        .iter()
                        .find(|(_, apps)| apps.contains(&m.app));
                    match taken {
                        Some((other, _)) => {
                            tracing::warn!(%blade, app = %m.app, %other, "the blade's peerlet not registered: blade {other}, served here too, has a peerlet of that type")
                        }
                        None => found.push(m),
                    }
                }
            }
            let apps = found.iter().map(|m| m.app.clone()).collect();
            self.blade_peerlets.insert(blade.clone(), apps);
            new.push((blade, root, found));
        }
        if old.is_empty() && new.is_empty() {
            return;
        }
        let messenger = self.messenger.clone();
        let installer = self.installer.clone();
        tokio::spawn(async move {
            use crate::router::PeerletChange;
            for app in old {
                let _ = messenger
                    .peerlets(PeerletChange::Unregister(app.clone()))
                    .await;
                tracing::info!(%app, "the blade's peerlet unregistered: this node no longer serves its blade");
            }
            for (blade, root, found) in new {
                // The packages installed for the blade, wherever it was held before.
                let kept = match &root {
                    Some(home) => installer.install_blade_packages(home).await,
                    None => Vec::new(),
                };
                for (file, outcome) in kept {
                    match outcome {
                        Ok(o) => {
                            tracing::info!(%blade, file = %file.display(), "the blade's package: {}", o.status())
                        }
                        Err(e) => {
                            tracing::warn!(%blade, file = %file.display(), "the blade's package not installed: {}", e.output)
                        }
                    }
                }
                for m in found {
                    let app = m.app.clone();
                    match messenger.peerlets(PeerletChange::Register(m)).await {
                        Ok(_) => tracing::info!(%blade, %app, "the blade's peerlet registered"),
                        Err(e) => {
                            tracing::warn!(%blade, %app, "the blade's peerlet not registered: {e}")
                        }
                    }
                }
            }
        });
    }

    /// A takeover's restore finished: start the blade's peerlets, and say what happened to
    /// every member.
    fn on_takeover_done(&mut self, (blade, epoch, answer): Takeover) {
        if self.restoring.get(&blade) == Some(&epoch) {
            self.restoring.remove(&blade);
        }
        self.sync_blade_peerlets();
        let steps = self.replication.takeover_steps().clone();
        let apps = match self.blade_peerlets.get(&blade) {
            Some(apps) if !apps.is_empty() => apps.join(", "),
            _ => "none in the blade's data set".into(),
        };
        steps.finish(&blade, StepKind::Peerlets, format!("registered: {apps}"));
        let me = format!("{} ({})", self.config.name, self.local_id);
        let detail = match &answer {
            Ok(p) => match dci_proto::backup::restored_from_payload(p) {
                Ok(r) => format!(
                    "blade {blade} taken over by {me} at epoch {epoch}: {} archives restored into {}, {} entries, {} bytes",
                    r.archives, r.target, r.entries, r.bytes
                ),
                Err(e) => format!("blade {blade} taken over by {me} at epoch {epoch}; restore answer unreadable: {e}"),
            },
            Err((code, msg)) if code == "no-archive" => format!(
                "blade {blade} taken over by {me} at epoch {epoch} with no data: {msg}"
            ),
            Err((code, msg)) => format!(
                "blade {blade} taken over by {me} at epoch {epoch}, but its restore failed ({code}): {msg}"
            ),
        };
        tracing::warn!("{detail}");
        let hooks = &self.config.moves;
        if !hooks.post.is_empty() {
            let restore = match &answer {
                Ok(_) => "ok".to_string(),
                Err((code, _)) => code.clone(),
            };
            let env = [
                ("DCI_BLADE", blade.clone()),
                ("DCI_EPOCH", epoch.to_string()),
                ("DCI_RESTORE", restore),
            ];
            let (command, timeout) = (hooks.post.clone(), hooks.timeout);
            let b = blade.clone();
            tokio::spawn(async move {
                match crate::hook::run(&command, &env, timeout).await {
                    Ok(()) => tracing::info!(blade = %b, "post-takeover command done"),
                    Err(e) => tracing::error!(blade = %b, "post-takeover command failed: {e}"),
                }
            });
        }
        self.broadcast_notice(FailureNotice {
            level: Level::Serious,
            part: Part::Node,
            id: format!("{blade}/takeover/{epoch}"),
            name: Some(blade.clone()),
            address: self.swim.meta().addrs.first().cloned(),
            at_ms: unix_ms(),
            detail,
        });
        steps.finish(
            &blade,
            StepKind::Notice,
            "a serious failure notice sent to every live member",
        );
    }

    /// This node stopped acting as `blade`: to a higher epoch (a notice says so), or because
    /// its lease ran out (it may renew it).
    fn stopped_acting(
        &mut self,
        blade: String,
        epoch: u64,
        holder: Option<crate::failover::election::Seat<PeerId>>,
    ) {
        match holder {
            Some(seat) if seat.holder != self.local_id => {
                let name = self.member_name(&seat.holder);
                let detail = format!(
                    "{} ({}) stopped acting as blade {blade} (epoch {epoch}): {name} ({}) holds it at epoch {}",
                    self.config.name, self.local_id, seat.holder, seat.epoch
                );
                tracing::warn!("{detail}");
                self.broadcast_notice(FailureNotice {
                    level: Level::Serious,
                    part: Part::Node,
                    id: format!("{blade}/lost/{epoch}"),
                    name: Some(blade),
                    address: self.swim.meta().addrs.first().cloned(),
                    at_ms: unix_ms(),
                    detail,
                });
            }
            _ => {
                tracing::warn!(%blade, epoch, "not acting as the blade: released, or its lease was not renewed by a majority")
            }
        }
    }

    /// Announces what this node acts as (blade, epoch, role, helpers) and republishes the
    /// routing view.
    fn publish_seat(&mut self) {
        let mut meta = self.swim.meta().clone();
        let blade = self.failover.acting().cloned();
        let role = self.failover.role();
        let helpers: Vec<String> = match self.helpers.ready() {
            Some((at, ids)) if Some(at) == blade.as_ref() => {
                ids.iter().map(|id| id.to_string()).collect()
            }
            _ => Vec::new(),
        };
        let extra = self.failover.extra_blades();
        if meta.blade != blade
            || meta.role != role
            || meta.helpers != helpers
            || meta.extra != extra
        {
            meta.blade = blade;
            meta.role = role;
            meta.helpers = helpers;
            meta.extra = extra;
            self.swim.set_meta(meta);
            self.apply_outputs();
        }
        self.sync_view();
    }

    /// Condition (3): this node's own sustained degradation, by `[failover] on_degraded`.
    fn on_own_degradation(&mut self) {
        let acting = self.failover.acting().cloned();
        let spares: Vec<PeerId> = match &acting {
            Some((blade, _)) => {
                // A spare that helps another blade already is not free.
                let busy: HashSet<String> = self
                    .helper_table()
                    .into_values()
                    .flat_map(|(_, ids)| ids)
                    .collect();
                self.failover
                    .spares(blade)
                    .into_iter()
                    .filter(|id| *id != self.local_id && !busy.contains(&id.to_string()))
                    .collect()
            }
            None => Vec::new(),
        };
        let policy = self.on_degraded;
        match self.helpers.on_degraded(policy, acting.as_ref(), spares) {
            Decision::Nothing | Decision::NotHolding => {}
            Decision::Move(blade, to) => {
                tracing::warn!(%blade, to = %self.member_name(&to), "degraded: handing the blade over (on_degraded = move)");
                self.hand_over(blade, to);
            }
            Decision::AskHelper(blade, epoch, to) => {
                tracing::warn!(%blade, epoch, helper = %self.member_name(&to), "degraded: asking a spare to help (on_degraded = helper)");
                let bytes = failover::encode_wire(&Wire::Help { blade, epoch });
                self.apply_effects(vec![Effect::Send(to, bytes)]);
            }
            Decision::NoSpare(blade) => {
                let epoch = acting.map_or(0, |(_, e)| e);
                let detail = format!(
                    "{} is degraded and holds blade {blade}, but no free spare may {}: the blade stays as it is",
                    self.config.name,
                    if policy == OnDegraded::Move { "take it" } else { "help with it" }
                );
                tracing::warn!("{detail}");
                self.broadcast_notice(FailureNotice {
                    level: Level::Moderate,
                    part: Part::Resource,
                    id: format!("{blade}/degraded-no-spare/{epoch}"),
                    name: Some(blade),
                    address: self.swim.meta().addrs.first().cloned(),
                    at_ms: unix_ms(),
                    detail,
                });
            }
        }
    }

    /// Releases every helper of the blade held here.
    fn release_helpers(&mut self, why: &str) {
        let at = self.helpers.ready().map(|((b, e), _)| (b.clone(), *e));
        let released = self.helpers.on_recovered();
        if let Some((blade, epoch)) = at {
            self.unhelp(&blade, epoch, released, why);
        }
        self.publish_seat();
    }

    /// A helper of the blade held here (or the spare asked) is down: it serves no more.
    fn helper_gone(&mut self, id: PeerId) {
        let Some((blade, epoch)) = self.helpers.ready().map(|((b, e), _)| (b.clone(), *e)) else {
            return;
        };
        if self.helpers.involves(id) {
            self.helpers.remove(id);
            self.unhelp(&blade, epoch, vec![id], "it is down");
            self.publish_seat();
        }
    }

    /// Tells each of `ids` that it no longer helps with `blade`, and says so.
    fn unhelp(&mut self, blade: &str, epoch: u64, ids: Vec<PeerId>, why: &str) {
        for id in ids {
            let bytes = failover::encode_wire(&Wire::Unhelp {
                blade: blade.to_owned(),
            });
            self.apply_effects(vec![Effect::Send(id, bytes)]);
            let detail = format!(
                "{} ({id}) no longer helps blade {blade} (epoch {epoch}): {why}",
                self.member_name(&id)
            );
            tracing::warn!("{detail}");
            self.broadcast_notice(FailureNotice {
                level: Level::Moderate,
                part: Part::Node,
                id: format!("{blade}/helper/{epoch}/{id}/released"),
                name: Some(blade.to_owned()),
                address: None,
                at_ms: unix_ms(),
                detail,
            });
        }
    }

    /// A helper request or answer from `from`.
    fn on_help(&mut self, from: PeerId, what: Wire) {
        match what {
            Wire::Help { blade, epoch } => self.asked_to_help(from, blade, epoch),
            Wire::Helping {
                blade,
                epoch,
                ready,
            } => {
                if self.helpers.on_answer(from, &blade, epoch, ready) {
                    let detail = format!(
                        "{} ({from}) helps blade {blade} (epoch {epoch}) with its read-only traffic: its holder {} is degraded",
                        self.member_name(&from),
                        self.config.name
                    );
                    tracing::warn!("{detail}");
                    self.broadcast_notice(FailureNotice {
                        level: Level::Moderate,
                        part: Part::Node,
                        id: format!("{blade}/helper/{epoch}/{from}/added"),
                        name: Some(blade),
                        address: None,
                        at_ms: unix_ms(),
                        detail,
                    });
                    self.publish_seat();
                } else if ready && !self.helpers.involves(from) {
                    // Ready for a request this node no longer stands by (another seat, or a later
                    // window asked another spare): not listed, so released.
                    let bytes = failover::encode_wire(&Wire::Unhelp { blade });
                    self.apply_effects(vec![Effect::Send(from, bytes)]);
                } else {
                    tracing::warn!(%blade, spare = %self.member_name(&from), "the spare asked to help cannot; the next sustained window asks again");
                }
            }
            Wire::Unhelp { blade } => {
                let mine = self
                    .helping
                    .as_ref()
                    .is_some_and(|h| h.blade == blade && h.seat.holder == from);
                if mine {
                    self.stop_helping("released by its holder");
                    self.sync_view();
                }
            }
            Wire::Election(_) | Wire::HandOver { .. } | Wire::Forget { .. } => {}
        }
    }

    /// The holder of `blade` at `epoch` asks this node to help: a free spare takes the role and
    /// restores the blade's latest archive, then answers.
    fn asked_to_help(&mut self, from: PeerId, blade: String, epoch: u64) {
        if let Some(h) = &self.helping {
            if h.blade == blade && h.seat.holder == from && h.seat.epoch == epoch {
                // Asked again (the answer was lost?): answer again once ready.
                if h.ready {
                    self.answer_help(from, blade, epoch, true);
                }
                return;
            }
        }
        let free = self.helping.is_none() && self.failover.is_spare(&self.local_id);
        let seat = self.failover.seats().get(&blade).copied();
        match Helping::grant(from, &blade, epoch, seat, free) {
            Ok(h) => {
                self.helping = Some(h);
                self.restore_for_help(blade, epoch);
            }
            Err(why) => {
                tracing::warn!(%blade, epoch, holder = %self.member_name(&from), "not helping: {why}");
                self.answer_help(from, blade, epoch, false);
            }
        }
    }

    fn answer_help(&mut self, to: PeerId, blade: String, epoch: u64, ready: bool) {
        let bytes = failover::encode_wire(&Wire::Helping {
            blade,
            epoch,
            ready,
        });
        self.apply_effects(vec![Effect::Send(to, bytes)]);
    }

    /// Restores `blade`'s latest complete archive into `<data-dir>/blades/BLADE`, as a copy:
    /// unlike a takeover, the archives are not adopted (the holder still makes them). Also how
    /// a ready helper keeps its copy in step: when the holder has made a newer archive since,
    /// it is restored over the copy (files it changed or added; a file it deleted stays).
    fn restore_for_help(&mut self, blade: String, epoch: u64) {
        let dir = self.help_dir(&blade);
        let Some(h) = self.helping.as_mut().filter(|h| !h.copying) else {
            return;
        };
        let copied = h.copy;
        h.copying = true;
        let ask = |request| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (
                (crate::replication::Operator::Backup(request), tx),
                async move {
                    match rx.await {
                        Ok(Ok(payload)) => Ok(payload),
                        Ok(Err((code, msg))) => Err((code, msg)),
                        Err(_) => Err(("stopped".into(), "the backup service stopped".into())),
                    }
                },
            )
        };
        let (list_call, listed) = ask(dci_proto::backup::BackupRequest::Archives {
            blade: blade.clone(),
        });
        self.replication.control(list_call);
        let controller = self.replication.controller();
        let done = self.help_restore_tx.clone();
        tokio::spawn(async move {
            let result = async {
                // A blade never backed up has nothing to copy: the helper serves without data,
                // as a takeover would.
                let latest = match listed.await {
                    Ok(p) => dci_proto::backup::archives_from_payload(&p)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .filter(|a| a.complete)
                        .map(|a| a.id)
                        .max(),
                    Err((code, _)) if code == "no-archive" => None,
                    Err((code, msg)) => return Err(format!("{code}: {msg}")),
                };
                let Some(latest) = latest.filter(|l| Some(*l) != copied) else {
                    return Ok(copied);
                };
                tracing::info!(%blade, epoch, archive = %latest, dir = %dir.display(), "helping: copying the blade's data");
                let (call, restored) = ask(dci_proto::backup::BackupRequest::Restore(
                    dci_proto::backup::RestoreArgs {
                        blade: blade.clone(),
                        archive: Some(latest.into()),
                        paths: Vec::new(),
                        to: Some(dir.display().to_string()),
                        on: None,
                    },
                ));
                controller
                    .send(call)
                    .await
                    .map_err(|_| "the backup service stopped".to_string())?;
                restored
                    .await
                    .map(|_| Some(latest))
                    .map_err(|(code, msg)| format!("{code}: {msg}"))
            }
            .await;
            let _ = done.send((blade, epoch, result)).await;
        });
    }

    /// Where a helper keeps its copy of `blade`'s data.
    fn help_dir(&self, blade: &str) -> std::path::PathBuf {
        self.data_dir.blades_path().join(blade)
    }

    /// A helper's restore finished: it serves from now on, and tells its holder.
    fn on_help_restored(&mut self, (blade, epoch, result): HelpRestore) {
        let Some(h) = self
            .helping
            .as_mut()
            .filter(|h| h.blade == blade && h.seat.epoch == epoch)
        else {
            return;
        };
        h.copying = false;
        if h.ready {
            // A refresh: a failed one leaves the last copy, tried again at the next sample.
            match result {
                Ok(archive) => h.copy = archive,
                Err(e) => tracing::warn!(%blade, epoch, "helping: the copy was not refreshed: {e}"),
            }
            return;
        }
        let holder = h.seat.holder;
        match result {
            Ok(archive) => {
                h.copy = archive;
                h.ready = true;
                tracing::warn!(%blade, epoch, "helping: the blade's data restored; serving its read-only traffic");
                self.answer_help(holder, blade, epoch, true);
                self.sync_blade_peerlets();
                self.sync_view();
            }
            Err(e) => {
                tracing::error!(%blade, epoch, "helping: the restore failed ({e}); not helping");
                self.helping = None;
                self.answer_help(holder, blade, epoch, false);
            }
        }
    }

    /// A helper keeps its role only while its holder's grant holds (see [`Helping::holds`]) and
    /// it holds no blade itself.
    fn check_helping(&mut self) {
        let Some(h) = self.helping.as_mut() else {
            return;
        };
        let seat = self.failover.seats().get(&h.blade).copied();
        let holder = self.swim.member(&h.seat.holder);
        let up = holder.is_some_and(|m| {
            matches!(
                m.liveness,
                Liveness::Alive | Liveness::UnreachableLink | Liveness::Suspect
            )
        });
        let me = self.local_id.to_string();
        let listed = holder.is_some_and(|m| {
            m.meta.blade.as_ref() == Some(&(h.blade.clone(), h.seat.epoch))
                && m.meta.helpers.contains(&me)
        });
        let holds = h.holds(seat, up, listed) && self.failover.acting().is_none();
        if !holds {
            self.stop_helping("the grant is gone: the seat moved on, the holder is down or no longer lists this node, or this node holds a blade now");
        }
    }

    fn stop_helping(&mut self, why: &str) {
        let Some(h) = self.helping.take() else {
            return;
        };
        let detail = format!(
            "{} ({}) no longer helps blade {} (epoch {}): {why}",
            self.config.name, self.local_id, h.blade, h.seat.epoch
        );
        tracing::warn!("{detail}");
        self.broadcast_notice(FailureNotice {
            level: Level::Moderate,
            part: Part::Node,
            id: format!(
                "{}/helper/{}/{}/stopped",
                h.blade, h.seat.epoch, self.local_id
            ),
            name: Some(h.blade),
            address: None,
            at_ms: unix_ms(),
            detail,
        });
        self.sync_blade_peerlets();
    }

    /// Each blade's helpers as its holder announces them (this node's own from its state), for
    /// the router: a holder grants them only while it acts as the blade at the seat's epoch.
    fn helper_table(&self) -> HashMap<String, (u64, Vec<String>)> {
        let mut table = HashMap::new();
        if let Some(((blade, epoch), ids)) = self.helpers.ready() {
            let acting = self.failover.acting() == Some(&(blade.clone(), *epoch));
            if acting && !ids.is_empty() {
                let ids = ids.iter().map(|i| i.to_string()).collect();
                table.insert(blade.clone(), (*epoch, ids));
            }
        }
        for (id, m) in self.swim.members() {
            let Some((blade, epoch)) = &m.meta.blade else {
                continue;
            };
            let seat = self.failover.seats().get(blade);
            if !m.meta.helpers.is_empty()
                && seat.is_some_and(|s| s.holder == id && s.epoch == *epoch)
            {
                table.insert(blade.clone(), (*epoch, m.meta.helpers.clone()));
            }
        }
        table
    }

    /// SIGHUP: re-reads `[failover]` and `[degradation]` from the config file.
    fn reload_live(&mut self) {
        match self.config.reload_live() {
            Ok(Some(live)) => {
                tracing::warn!(
                    on_degraded = live.on_degraded.as_str(),
                    "SIGHUP: [failover] and [degradation] re-read"
                );
                self.detector.set_config(live.degradation.clone());
                self.config.degradation = live.degradation;
                self.on_degraded = live.on_degraded;
            }
            Ok(None) => tracing::warn!("SIGHUP: started without a config file, nothing to re-read"),
            Err(e) => tracing::error!("SIGHUP: the running settings stay: {e}"),
        }
    }

    /// Connections changed: republishes the view now, or, if it was rebuilt less than
    /// [`VIEW_MIN_GAP`] ago, once that gap has passed (until then the router relays instead of
    /// sending direct). A rebuild formats every member's id, and while a large mesh forms
    /// connections open and close all the time.
    fn view_changed(&mut self) {
        if self.view_synced.elapsed() >= VIEW_MIN_GAP {
            self.sync_view();
        } else {
            self.view_pending = true;
        }
    }

    /// Tells the router who is in the mesh, when that changed.
    fn sync_view(&mut self) {
        // Block transfers are accepted from members only (see `net`): the mesh admitted them.
        let admitted = &mut self.data_swarm.behaviour_mut().members;
        for (id, _) in self.swim.members() {
            admitted.allow_peer(id);
        }
        self.view_synced = Instant::now();
        self.view_pending = false;
        self.check_helping();
        let acting = self.failover.acting().map(|(b, _)| b.clone());
        let local_blade = match acting {
            Some(b) => Some(b),
            None if self.failover.displaced() => None,
            None => Some(self.config.name.clone()),
        };
        let seats = self
            .failover
            .seats()
            .iter()
            .map(|(blade, seat)| {
                let entry = if seat.holder != self.local_id {
                    Some((seat.holder.to_string(), seat.epoch))
                } else {
                    self.failover
                        .serves(blade)
                        .map(|e| (self.local_id.to_string(), e))
                };
                (blade.clone(), entry)
            })
            .collect();
        let local_epoch = local_blade
            .as_ref()
            .and_then(|b| self.failover.seats().get(b))
            .filter(|s| s.holder == self.local_id)
            .map(|s| s.epoch);
        let mut view = router::view_of(
            &self.local_id,
            (local_blade.as_deref(), local_epoch),
            self.swim.members().map(|(id, m)| {
                let up = matches!(
                    m.liveness,
                    Liveness::Alive | Liveness::UnreachableLink | Liveness::Suspect
                );
                (id, m.meta.name.as_str(), up)
            }),
            &self.connected,
            &self.config.messaging.groups,
            seats,
        );
        view.helpers = self.helper_table();
        view.helping = self
            .helping
            .as_ref()
            .filter(|h| h.ready)
            .map(|h| (h.blade.clone(), h.seat.epoch));
        self.view.send_if_modified(|old| {
            let changed = old.peers != view.peers
                || old.seats != view.seats
                || old.local_blade != view.local_blade
                || old.local_epoch != view.local_epoch
                || old.helpers != view.helpers
                || old.helping != view.helping;
            if changed {
                *old = Arc::new(view);
            }
            changed
        });
    }

    fn publish(&mut self, id: PeerId, kind: EventKind, detail: String) {
        let name = if id == self.local_id {
            self.config.name.clone()
        } else {
            self.member_name(&id)
        };
        self.events.publish(Event {
            id,
            name,
            kind,
            at: std::time::SystemTime::now(),
            detail,
        });
    }

    fn on_meta_changed(&mut self, id: PeerId) {
        tracing::debug!(member = %self.member_name(&id), "member metadata changed");
        self.publish(id, EventKind::MetaChanged, String::new());
        let degraded = self.swim.member(&id).is_some_and(|m| m.meta.degraded);
        let was = self.degraded_members.contains(&id);
        if degraded && !was {
            self.degraded_members.insert(id);
            self.publish(id, EventKind::Degraded, String::new());
        } else if !degraded && was {
            self.degraded_members.remove(&id);
            self.publish(id, EventKind::Recovered, String::new());
        }
    }

    /// Our own suspicion of `id` ran out: tell every member, at the highest level.
    fn declare_dead(&mut self, id: PeerId) {
        let (name, address, silent_ms) = match self.swim.member(&id) {
            Some(m) => {
                let heard = [m.last_ack(), self.swim.last_announce(&id)]
                    .into_iter()
                    .flatten()
                    .max();
                (
                    Some(m.meta.name.clone()),
                    m.meta.addrs.first().cloned(),
                    heard.map(|t| self.now().saturating_sub(t).as_millis()),
                )
            }
            None => (None, None, None),
        };
        let detail = match silent_ms {
            Some(ms) => {
                format!("no probe answered and no relayed announcement; last heard {ms} ms ago")
            }
            None => "no probe answered and no relayed announcement".into(),
        };
        self.broadcast_notice(FailureNotice {
            level: Level::SystemDown,
            part: Part::Node,
            id: id.to_string(),
            name,
            address,
            at_ms: unix_ms(),
            detail,
        });
    }

    /// Logs and pages a notice of ours, and sends it to every live member, unless this node
    /// saw the same notice lately (its own, or another member's, which went to every member
    /// already; each member logs it once anyway). While a large mesh formed on an overloaded
    /// host, every node that declared a flapping member dead sent every member its notice,
    /// again at each flap: 1,100 envelopes a second from one node of a hundred.
    fn broadcast_notice(&mut self, notice: FailureNotice) {
        let me = self.local_id.to_string();
        if !self.receive_notice(&notice, &me) {
            return;
        }
        let sender = dci_proto::Sender {
            node: me,
            blade: Some(self.config.name.clone()),
            app: NOTICE_APP.into(),
            instance: None,
        };
        let env = notice::envelope(sender, &notice);
        self.counters.notices_sent +=
            self.view.borrow().peers.iter().filter(|p| p.up).count() as u64;
        if !self.messenger.try_send(env) {
            tracing::warn!("the router is saturated; a failure notice was not broadcast");
        }
    }

    /// Logs a notice once, and pages for the two worst levels; whether it was news.
    fn receive_notice(&mut self, notice: &FailureNotice, from: &str) -> bool {
        let new = self.notices_seen.is_new(notice, Instant::now());
        if new {
            notice::log(notice, from);
            notice::page(&self.config.page, notice, from);
            let sender = from.parse::<PeerId>().ok().and_then(|p| {
                if p == self.local_id {
                    Some(self.config.name.clone())
                } else {
                    self.swim.member(&p).map(|m| m.meta.name.clone())
                }
            });
            if self.recent_notices.len() >= RECENT_NOTICES {
                self.recent_notices.pop_front();
            }
            self.recent_notices
                .push_back(dci_proto::control::NoticeInfo {
                    notice: notice.clone(),
                    from: sender.unwrap_or_else(|| from.to_owned()),
                });
        }
        new
    }

    /// The data dir refused a write: a `serious` fault (the store and the database live there).
    fn on_disk_fault(&mut self, reason: String) {
        self.broadcast_notice(FailureNotice {
            level: Level::Serious,
            part: Part::Disk,
            id: format!("{}/data-dir", self.local_id),
            name: Some(self.config.name.clone()),
            address: Some(self.data_dir.path().display().to_string()),
            at_ms: unix_ms(),
            detail: format!("the data dir cannot be written: {reason}"),
        });
    }

    /// Reads this host's figures, runs the degradation detector, and re-announces the figures
    /// when they moved.
    fn sample_resources(&mut self) {
        let reading = self.sampler.sample();
        let transitions = self.detector.observe(&reading, self.now());
        for t in &transitions {
            let cfg = &self.config.degradation;
            let (kind, metric, detail) = match *t {
                Transition::Degraded(m, v) => (
                    EventKind::Degraded,
                    m,
                    format!(
                        "{} at {v}%, above {}% for {} s",
                        m.as_str(),
                        cfg.high,
                        cfg.raise_after.as_secs()
                    ),
                ),
                Transition::Sustained(m, v) => (
                    EventKind::Degraded,
                    m,
                    format!(
                        "{} still at {v}%, above {}% for another {} s",
                        m.as_str(),
                        cfg.high,
                        cfg.raise_after.as_secs()
                    ),
                ),
                Transition::Recovered(m, v) => (
                    EventKind::Recovered,
                    m,
                    format!(
                        "{} at {v}%, below {}% for {} s",
                        m.as_str(),
                        cfg.low,
                        cfg.clear_after.as_secs()
                    ),
                ),
            };
            tracing::warn!(metric = metric.as_str(), "{}: {detail}", kind.as_str());
            self.publish(self.local_id, kind, detail.clone());
            if kind == EventKind::Degraded {
                self.broadcast_notice(FailureNotice {
                    level: Level::Moderate,
                    part: Part::Resource,
                    id: format!("{}/{}", self.local_id, metric.as_str()),
                    name: Some(self.config.name.clone()),
                    address: self.swim.meta().addrs.first().cloned(),
                    at_ms: unix_ms(),
                    detail,
                });
            }
        }
        let worse = transitions
            .iter()
            .any(|t| matches!(t, Transition::Degraded(..) | Transition::Sustained(..)));
        let degraded = self.detector.degraded();
        if worse {
            self.on_own_degradation();
        } else if !degraded && self.helpers.any() {
            // Recovered (or no longer watching the figure that was high, after a SIGHUP).
            self.release_helpers("the holder recovered");
        }
        let mut meta = self.swim.meta().clone();
        if degraded != meta.degraded || meta.resources.differs(&reading, RESOURCE_ANNOUNCE_POINTS) {
            meta.degraded = degraded;
            meta.resources = Resources {
                // The first reading has no CPU figure yet; keep the last known one.
                cpu: reading.cpu.or(meta.resources.cpu),
                ..reading
            };
            self.failover.set_own(&meta);
            self.swim.set_meta(meta);
            self.apply_outputs();
        }
        // A ready helper brings its copy up to the holder's latest archive.
        if let Some(h) = self.helping.as_ref().filter(|h| h.ready) {
            let (blade, epoch) = (h.blade.clone(), h.seat.epoch);
            self.restore_for_help(blade, epoch);
        }
    }

    fn send_packet(&mut self, to: PeerId, packet: &MeshPacket) {
        self.send_frame(Lane::Membership, to, mesh::encode(packet));
    }

    /// Queues a message for `to`, dialling it at its announced addresses first when it is not
    /// connected (the stream waits for that connection).
    fn send_frame(&mut self, lane: Lane, to: PeerId, message: Vec<u8>) {
        self.dial_member(to);
        self.frames.send(lane, to, message);
    }

    /// Dials a member at its announced addresses, unless it is connected or being dialled.
    fn dial_member(&mut self, to: PeerId) {
        if self.connected.contains(&to) {
            return;
        }
        let addrs: Vec<Multiaddr> = self
            .swim
            .member(&to)
            .map(|m| m.meta.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        let opts = DialOpts::peer_id(to)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        let _ = self.swarm.dial(opts);
    }

    /// Dials every seed not reached yet. Seeds are retried even while other peers are connected:
    /// a seed that started late would otherwise leave two islands that never meet.
    fn redial_seeds(&mut self) {
        let now = self.now();
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
                    self.view_changed();
                    tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                if let Some(seed) = self.seed_dials.remove(&connection_id) {
                    self.seed_backoff.reset(&seed);
                    self.seeds_reached.insert(seed);
                }
                // A peer we do not know yet: exchange whole tables with it (a join).
                if self.swim.member(&peer_id).is_none() {
                    self.swim.join(peer_id);
                    self.apply_outputs();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                self.view_changed();
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
                let was_seed = self.seed_dials.remove(&connection_id).is_some();
                // Failed dials to members are the prober's business; seeds are worth a warning.
                if was_seed {
                    tracing::warn!("cannot reach seed: {}", one_line(&error.to_string()));
                } else {
                    tracing::debug!(peer = ?peer_id, "cannot connect: {}", one_line(&error.to_string()));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            })) => {
                tracing::debug!(%peer, "ping failed ({e}); closing the connection");
                self.swarm.close_connection(connection);
            }
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
                    if peer != self.local_id && !self.connected.contains(&peer) {
                        tracing::debug!(%peer, %addr, "discovered by mDNS");
                        let opts = DialOpts::peer_id(peer).addresses(vec![addr]).build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_data_event(&mut self, event: SwarmEvent<net::DataBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening for block transfers");
                self.advertise_listeners();
            }
            SwarmEvent::ExpiredListenAddr { .. } => self.advertise_listeners(),
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => tracing::warn!(
                from = %send_back_addr,
                "refused block connection: {}",
                one_line(&error.to_string())
            ),
            SwarmEvent::Behaviour(net::DataBehaviourEvent::Members(never)) => match never {},
            SwarmEvent::Behaviour(net::DataBehaviourEvent::Blocks(event)) => {
                let swim = &self.swim;
                self.replication
                    .on_event(event, |p| swim.member(p).map(|m| m.meta.name.clone()));
            }
            _ => {}
        }
    }

    fn on_frames(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Message(Lane::Membership, peer, message) => self.on_membership(peer, &message),
            Inbound::Message(Lane::Election, peer, message) => self.on_election(peer, &message),
            Inbound::BadStream(lane, peer, reason) => {
                match lane {
                    Lane::Membership => self.counters.membership_bad_streams += 1,
                    Lane::Election => self.failover.refused += 1,
                }
                tracing::warn!(%peer, "bad {lane:?} stream ({reason}); disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn on_membership(&mut self, peer: PeerId, message: &[u8]) {
        match mesh::decode(message) {
            Ok(packet) => {
                let now = self.now();
                self.swim.handle_packet(peer, packet, now);
                self.apply_outputs();
            }
            Err(e) => {
                match e {
                    mesh::PacketError::TooLarge => self.counters.membership_oversized += 1,
                    mesh::PacketError::Malformed => self.counters.membership_malformed += 1,
                }
                tracing::warn!(%peer, "{e}; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn on_election(&mut self, peer: PeerId, message: &[u8]) {
        let now = self.now();
        match self.failover.handle_message(peer, message, now) {
            Ok(effects) => self.apply_effects(effects),
            Err(e @ failover::MessageError::NotMember) => {
                tracing::debug!(%peer, "{e}");
            }
            Err(e) => {
                tracing::warn!(%peer, "{e}; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    /// A failure notice the router delivered (it checked that a peer's notice is its own).
    fn on_notice(&mut self, env: Envelope, peer: PeerId) {
        match notice::from_envelope(&env) {
            Some(Ok(n)) => {
                if peer != self.local_id {
                    self.counters.notices_received += 1;
                }
                let _ = self.receive_notice(&n, &env.sender.node);
            }
            Some(Err(e)) => {
                self.counters.envelopes_refused += 1;
                tracing::warn!(%peer, "refused failure notice: {e}");
            }
            // A copy of a notice of ours that did not arrive: expected while members die,
            // and each member's own detection covers them. Counted, not logged per copy (a
            // flapping hundred-node mesh made thousands).
            None if env.kind == dci_proto::Kind::Error => {
                self.counters.notices_undelivered += 1;
                let (code, why) = dci_proto::control::error_from_payload(&env.payload)
                    .unwrap_or_else(|| ("unknown".into(), env.payload.as_str().to_owned()));
                tracing::debug!(%peer, %code, "a failure notice was not delivered: {why}");
            }
            None => {
                tracing::warn!(%peer, kind = %env.kind, "dropped a failure-notice envelope that is not an event")
            }
        }
    }

    /// Carries out a request of the replication service.
    fn on_replication(&mut self, cmd: crate::replication::NetCommand) {
        use crate::replication::NetCommand;
        match cmd {
            NetCommand::Send { to, request, reply } => {
                let addrs = self
                    .swim
                    .member(&to)
                    .map(|m| {
                        m.meta
                            .data_addrs
                            .iter()
                            .filter_map(|a| a.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                let blocks = &mut self.data_swarm.behaviour_mut().blocks;
                self.replication.send(blocks, to, request, addrs, reply);
            }
            NetCommand::Respond { token, response } => {
                let blocks = &mut self.data_swarm.behaviour_mut().blocks;
                self.replication.respond(blocks, token, response);
            }
            NetCommand::Members(reply) => {
                let _ = reply.send(self.member_infos());
            }
        }
    }

    fn advertise_listeners(&mut self) {
        let addrs = advertised(self.swarm.listeners());
        let data_addrs = advertised(self.data_swarm.listeners());
        let mut meta = self.swim.meta().clone();
        if meta.addrs != addrs || meta.data_addrs != data_addrs {
            meta.addrs = addrs;
            meta.data_addrs = data_addrs;
            self.swim.set_meta(meta);
            self.apply_outputs();
        }
    }

    fn on_query(&mut self, query: Query) {
        match query {
            Query::Members(reply) => {
                let _ = reply.send(self.member_infos());
            }
            Query::Counters(reply) => {
                let c = &self.counters;
                let rows = [
                    ("membership-malformed", c.membership_malformed),
                    ("membership-oversized", c.membership_oversized),
                    ("membership-bad-streams", c.membership_bad_streams),
                    ("messages-dropped", self.frames.dropped),
                    ("membership-forged", self.swim.rejected().bad_proof),
                    ("envelopes-refused", c.envelopes_refused),
                    ("notices-sent", c.notices_sent),
                    ("notices-received", c.notices_received),
                    ("notices-undelivered", c.notices_undelivered),
                    ("election-refused", self.failover.refused),
                    ("election-persist-failures", self.failover.persist_failures),
                    ("failover-takeovers", c.takeovers),
                    ("failover-restoring", self.restoring.len() as u64),
                    ("failover-hosted", self.failover.hosted().len() as u64),
                    ("failover-handovers", c.handovers),
                    (
                        "failover-helpers",
                        self.helpers.ready().map_or(0, |(_, ids)| ids.len() as u64),
                    ),
                    (
                        "failover-helping",
                        u64::from(self.helping.as_ref().is_some_and(|h| h.ready)),
                    ),
                ];
                let mut rows: Vec<(String, u64)> =
                    rows.iter().map(|(n, v)| (n.to_string(), *v)).collect();
                rows.extend(self.replication.counter_rows());
                let _ = reply.send(rows);
            }
            Query::Backup(call) => self.replication.control(call),
            Query::Seats(reply) => {
                let _ = reply.send(self.seat_infos());
            }
            Query::Notices(reply) => {
                let _ = reply.send(self.recent_notices.iter().cloned().collect());
            }
            Query::Discover(reply) => {
                // The operator asks now: every seed is tried at once, whatever its backoff.
                self.seeds_reached.clear();
                for seed in &self.config.join {
                    self.seed_backoff.reset(seed);
                }
                self.redial_seeds();
                let _ = reply.send(self.member_infos());
            }
            Query::Failover { blade, to, reply } => {
                let _ = reply.send(self.declare_failover(blade, to));
            }
            Query::Forget { node, reply } => {
                let _ = reply.send(self.forget(&node));
            }
            Query::Events(reply) => {
                let events = self
                    .events
                    .recent()
                    .map(|e| EventInfo {
                        id: e.id.to_string(),
                        name: e.name.clone(),
                        kind: e.kind.as_str().into(),
                        at_ms: e
                            .at
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                        detail: e.detail.clone(),
                    })
                    .collect();
                let _ = reply.send(events);
            }
        }
    }

    /// The seat table as this node sees it: the holder's name from membership, and whether it
    /// serves the blade (up, or here with a lease), is restoring it here, or is down.
    fn seat_infos(&self) -> Vec<dci_proto::control::SeatInfo> {
        let helpers = self.helper_table();
        self.failover
            .seats()
            .iter()
            .map(|(blade, seat)| {
                let here = seat.holder == self.local_id;
                let state = if here {
                    let acting = self.failover.serves(blade).is_some();
                    let restoring = self.restoring.get(blade) == Some(&seat.epoch);
                    match (acting, restoring) {
                        (_, true) => "restoring",
                        (true, false) => "held",
                        (false, false) => "down",
                    }
                } else {
                    let up = self.swim.member(&seat.holder).is_some_and(|m| {
                        matches!(
                            m.liveness,
                            Liveness::Alive | Liveness::UnreachableLink | Liveness::Suspect
                        )
                    });
                    if up {
                        "held"
                    } else {
                        "down"
                    }
                };
                let holder_name = if here {
                    self.config.name.clone()
                } else {
                    self.member_name(&seat.holder)
                };
                let helpers = helpers
                    .get(blade)
                    .filter(|(granted, _)| *granted == seat.epoch)
                    .map(|(_, ids)| {
                        ids.iter()
                            .map(|id| dci_proto::control::HelperInfo {
                                name: id
                                    .parse::<PeerId>()
                                    .map(|p| self.member_name(&p))
                                    .unwrap_or_default(),
                                node: id.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let steps = if here {
                    self.replication.takeover_steps().of(blade, seat.epoch)
                } else {
                    Vec::new()
                };
                dci_proto::control::SeatInfo {
                    blade: blade.clone(),
                    holder: seat.holder.to_string(),
                    holder_name,
                    epoch: seat.epoch,
                    state: state.into(),
                    helpers,
                    steps: steps
                        .into_iter()
                        .map(|s| dci_proto::control::StepInfo {
                            step: s.kind.as_str().into(),
                            what: s.what,
                            after_ms: s.after.as_millis() as u64,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn member_infos(&self) -> Vec<MemberInfo> {
        let now = self.now();
        let me = self.swim.meta();
        let mut rows = vec![MemberInfo {
            id: self.local_id.to_string(),
            name: me.name.clone(),
            state: "alive".into(),
            role: me.role.as_str().into(),
            zone: me.zone.clone(),
            incarnation: self.swim.incarnation(),
            last_heard_ms: 0,
            version: me.version.clone(),
            addrs: me.addrs.clone(),
            degraded: me.degraded,
            resources: resource_row(&me.resources),
            channels: Vec::new(),
            blade: me.blade.clone(),
        }];
        for (id, m) in self.swim.members() {
            // Last sign of life: an ack, an announcement, or else when its state last changed.
            let heard = [m.last_ack(), self.swim.last_announce(&id)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(m.since());
            rows.push(MemberInfo {
                id: id.to_string(),
                name: m.meta.name.clone(),
                state: liveness_name(m.liveness).into(),
                role: m.meta.role.as_str().into(),
                zone: m.meta.zone.clone(),
                incarnation: m.inc,
                last_heard_ms: now.saturating_sub(heard).as_millis() as u64,
                version: m.meta.version.clone(),
                addrs: m.meta.addrs.clone(),
                degraded: m.meta.degraded,
                resources: resource_row(&m.meta.resources),
                channels: self.channels(&id, m, now),
                blade: m.meta.blade.clone(),
            });
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        rows
    }

    /// The heartbeat status table for one member: the probe channel (our direct and indirect
    /// probes; serial = the sequence number of the last that succeeded) and the relay channel
    /// (its signed announcements through any member; serial = its incarnation).
    fn channels(
        &self,
        id: &PeerId,
        m: &crate::membership::swim::Member<MemberMeta, Vec<u8>>,
        now: Duration,
    ) -> Vec<ChannelInfo> {
        let ago = |t: Option<Duration>| t.map(|t| now.saturating_sub(t).as_millis() as u64);
        let last_announce = self.swim.last_announce(id);
        let probe_state = match m.liveness {
            Liveness::Left => "disabled",
            Liveness::Alive if m.last_ack().is_none() => "idle",
            Liveness::Alive => "ok",
            Liveness::UnreachableLink | Liveness::Suspect | Liveness::Dead => "failed",
        };
        let relay_enabled = self.config.membership.relay_channel;
        let relay_state = match m.liveness {
            _ if !relay_enabled => "disabled",
            Liveness::Left => "disabled",
            Liveness::Dead => "failed",
            // Announcements are solicited by suspicion: one that answered it keeps the member up.
            Liveness::UnreachableLink => "ok",
            Liveness::Suspect => "failed",
            Liveness::Alive if last_announce.is_none() => "idle",
            Liveness::Alive => "ok",
        };
        vec![
            ChannelInfo {
                name: "probe".into(),
                enabled: m.liveness != Liveness::Left,
                serial: u64::from(m.last_ack_seq()),
                last_ms: ago(m.last_ack()),
                state: probe_state.into(),
            },
            ChannelInfo {
                name: "relay".into(),
                enabled: relay_enabled,
                serial: m.inc,
                last_ms: ago(last_announce),
                state: relay_state.into(),
            },
        ]
    }

    fn member_name(&self, id: &PeerId) -> String {
        if *id == self.local_id {
            return self.config.name.clone();
        }
        self.swim
            .member(id)
            .map(|m| m.meta.name.clone())
            .unwrap_or_default()
    }

    fn log_change(&self, id: PeerId, liveness: Liveness) {
        let name = self.member_name(&id);
        let what = liveness_name(liveness);
        match liveness {
            Liveness::Dead | Liveness::Suspect | Liveness::UnreachableLink => {
                tracing::warn!(member = %name, id = %id, "member {what}")
            }
            Liveness::Alive | Liveness::Left => {
                tracing::info!(member = %name, id = %id, "member {what}")
            }
        }
    }

    /// Tells every live member that this node leaves, and waits briefly for the packets to go.
    async fn leave(mut self) {
        let packets = self.swim.leave();
        self.save_incarnation(true);
        let mut written = futures::stream::FuturesUnordered::new();
        for (to, packet) in packets {
            self.send_packet(to, &packet);
            written.push(self.frames.flushed(Lane::Membership, to));
        }
        let deadline = tokio::time::sleep(LEAVE_GRACE);
        tokio::pin!(deadline);
        while !written.is_empty() {
            tokio::select! {
                _ = &mut deadline => break,
                _ = written.next() => {}
                // Dials for the packets need the swarm.
                _ = self.swarm.select_next_some() => {}
            }
        }
        let _ = std::fs::remove_file(self.data_dir.socket_path());
        if let Err(e) = self.db.flush_async().await {
            tracing::warn!("database flush failed: {e}");
        }
        tracing::info!("dcid stopped; peers were told it left");
    }
}

/// Opens the block store and catalog and prepares the replication service; the returned closure
/// starts it once the event hub exists.
#[allow(clippy::type_complexity)]
fn start_replication(
    config: &Config,
    db: &sled::Db,
    data_dir: &DataDir,
    local_id: PeerId,
    installer: std::sync::Arc<crate::package::install::Installer>,
) -> Result<
    (
        crate::replication::Link,
        Arc<std::sync::RwLock<crate::replication::settings::BackupConfig>>,
        impl FnOnce(tokio::sync::broadcast::Receiver<Event>, Option<mpsc::Receiver<router::Retrieve>>),
    ),
    StartError,
> {
    use crate::replication::{channels, service::Service};
    use crate::store::{catalog::SledCatalog, FsBlockStore};
    let store_err = |e: crate::store::StoreError| StartError::Database {
        path: data_dir.path().join("blocks"),
        reason: one_line(&e.to_string()),
    };
    let store = FsBlockStore::open(&data_dir.path().join("blocks")).map_err(store_err)?;
    let catalog = SledCatalog::open(db).map_err(store_err)?;
    let (link, ch) = channels();
    let mut backup = config.backup.clone();
    // Made now: a restore forwarded from another node may write under it, and an allowed
    // directory must exist to be resolved (symlinks and all) before anything is written.
    let restores = data_dir.path().join("restores");
    std::fs::create_dir_all(&restores).map_err(|e| StartError::Database {
        path: restores.clone(),
        reason: one_line(&e.to_string()),
    })?;
    backup.restore_into.push(restores);
    backup.takeover_dir = Some(data_dir.blades_path());
    backup.spare = config.role == Role::Spare;
    let service = Service::new(
        std::sync::Arc::new(store),
        std::sync::Arc::new(catalog),
        backup,
        (local_id, config.name.clone(), config.zone.clone()),
        ch.net,
        (ch.stats, ch.seats, ch.steps),
        Some(installer),
    );
    service
        .load_overrides(data_dir.path().join(BACKUP_OVERRIDES))
        .map_err(|reason| StartError::Settings { reason })?;
    let (inbound, control) = (ch.inbound, ch.control);
    let settings = service.settings_in_force();
    Ok((link, settings, move |events, retrieve| {
        tokio::spawn(service.run(inbound, control, events, retrieve));
    }))
}

/// Writes `path` durably every `interval`, off the event loop (an fsync can take longer than a
/// probe timeout), and reports each failure.
async fn check_disk(path: std::path::PathBuf, interval: Duration, faults: mpsc::Sender<String>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if faults.is_closed() {
            return; // the agent stopped
        }
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            crate::datadir::write_atomic(&path, unix_ms().to_string().as_bytes(), 0o600)
        })
        .await;
        let failure = match written {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => one_line(&e.to_string()),
            Err(e) => one_line(&e.to_string()),
        };
        if faults.send(failure).await.is_err() {
            return; // the agent stopped
        }
    }
}

fn resource_row(r: &Resources) -> [Option<u8>; 4] {
    [r.cpu, r.memory, r.disk, r.load]
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The spelling of a liveness in logs and in `dcish nodes`.
fn liveness_name(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "alive",
        Liveness::UnreachableLink => "unreachable-link",
        Liveness::Suspect => "suspect",
        Liveness::Dead => "dead",
        Liveness::Left => "left",
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
///
/// An incarnation also grows during a run (each metadata change, refutation and the leave), so
/// the next run must start above the last one's end, which a crash may not have written: it starts
/// at the wall clock in milliseconds when that is higher (a run would need more than a thousand
/// changes a second to outrun it), and above whatever was written when the clock is behind.
fn next_incarnation(db: &sled::Db, now_ms: u64) -> Result<u64, sled::Error> {
    let meta = db.open_tree("meta")?;
    let next = meta
        .get("incarnation")?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
        .saturating_add(1)
        .max(now_ms);
    meta.insert("incarnation", &next.to_be_bytes())?;
    meta.flush()?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_starts_above_everything_the_last_one_wrote_or_reached_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(next_incarnation(&db, 5_000).unwrap(), 5_000);
        // A clock that went back: above what was written.
        assert_eq!(next_incarnation(&db, 10).unwrap(), 5_001);
        // Later: the clock, above every change a run in between can have made.
        assert_eq!(next_incarnation(&db, 90_000).unwrap(), 90_000);
    }

    #[test]
    fn loopback_addresses_are_advertised_only_when_nothing_else_listens() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let lan: Multiaddr = "/ip4/10.1.2.3/tcp/1".parse().unwrap();
        assert_eq!(advertised([&lo, &lan].into_iter()), vec![lan.to_string()]);
        assert_eq!(advertised([&lo].into_iter()), vec![lo.to_string()]);
    }
}
