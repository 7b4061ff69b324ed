//! The replication service: one task per node that makes this blade's archives, pushes them to
//! their holders, keeps the holders in step (peersync), replaces dead holders (repair), ages and
//! collects, answers other nodes' block requests, and restores.
//!
//! The owner drives everything about its blade's copies: every sync round it computes the holders
//! from the live member table ([`placement::holders`]), tells each holder which archives exist
//! (`Sync`), and pushes each archive a holder lacks: `Have` to learn which blocks are missing there,
//! `Put` for those only, then `Commit`. A holder commits an archive only when every block it names
//! is durable there, so a committed archive is restorable from that holder alone. A backup's scan
//! already sends its new blocks to the reachable holders as it writes them, so the round after it
//! mostly finds them there and sends little more than the manifest. A holder that
//! was away is simply behind at the next round, and gets only what it lacks. A holder dead past the
//! repair grace drops out of the candidates, so the next node in placement order takes its place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dci_proto::archive::{ArchiveId, ArchiveRef, PickError};
use dci_proto::backup::{
    archives_to_payload, restored_to_payload, settings_to_payload, ArchiveInfo, BackupRequest,
    BladeSettings, RestoreArgs, RestoreSummary, SettingsChange,
};
use dci_proto::control::MemberInfo;
use dci_proto::Payload;
use futures::{StreamExt, TryStreamExt};
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc, oneshot, Mutex};

use super::placement::{self, Candidate, Placement};
use super::protocol::{self, Forget, Request, Response, MAX_HAVE_IDS, MAX_PUT_BLOCKS};
use super::settings::{next_due, BackupConfig, Overrides};
use super::{ControlCall, Inbound, NetCommand};
use crate::backup::restore::{BlockSource, Restorer};
use crate::backup::scan::ScanSettings;
use crate::backup::{archive_blocks, chain, load_manifest, make_archive, LocalSource};
use crate::events::{Event, EventKind};
use crate::failover::steps::{Kind, TakeoverSteps};
use crate::store::catalog::{ArchiveRecord, Catalog};
use crate::store::{decode_verified, BlockId, BlockStore, StoreError};

/// How long one block-protocol request may take before it is given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a forwarded operator command may take; the block protocol's own limit is the same.
const FORWARDED_TIMEOUT: Duration = Duration::from_secs(3600);
/// `Put` batches in flight to one holder.
const PUSH_PARALLEL: usize = 8;
/// How long continuous mode lets a burst of changes settle before it makes an archive.
const CHANGE_SETTLE: Duration = Duration::from_millis(300);
/// Inbound requests handled at once.
const INBOUND_PARALLEL: usize = 16;

/// The service's ends of the channels to the event loop.
pub struct Channels {
    /// Commands to the event loop.
    pub net: mpsc::Sender<NetCommand>,
    /// Requests from peers.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Operators' commands.
    pub control: mpsc::Receiver<ControlCall>,
    /// Counters shared with the event loop.
    pub stats: Arc<super::Stats>,
    /// The seat table, kept by the event loop.
    pub seats: Arc<super::SeatEpochs>,
    /// The steps of this node's latest takeover, written by the event loop and the service.
    pub steps: TakeoverSteps,
}

/// An error for the operator: a code and one line.
type Failure = (String, String);

fn fail(code: &str, msg: impl std::fmt::Display) -> Failure {
    (code.into(), crate::config::one_line(&msg.to_string()))
}

/// An archive as named in messages: the one asked for, or the latest.
fn which(archive: Option<ArchiveRef>) -> String {
    archive.map_or("its latest archive".into(), |a| format!("archive {a}"))
}

/// The archive of `blade` that `archive` names among `ids` (one blade's, in order), or the
/// latest when none is named.
fn pick(
    blade: &str,
    archive: Option<ArchiveRef>,
    ids: impl Iterator<Item = ArchiveId>,
) -> Result<ArchiveId, Failure> {
    let ids: Vec<ArchiveId> = ids.collect();
    let Some(latest) = ids.last().copied() else {
        return Err(fail(
            "no-archive",
            format!("no node holds an archive of {blade}"),
        ));
    };
    let Some(archive) = archive else {
        return Ok(latest);
    };
    archive.pick(ids).map_err(|why| {
        let code = match why {
            PickError::Missing(_) => "no-archive",
            PickError::Ambiguous(..) => "ambiguous-archive",
        };
        fail(code, format!("{blade}: {why}"))
    })
}

/// Everything the service's tasks share.
pub struct Service {
    store: Arc<dyn BlockStore>,
    catalog: Arc<dyn Catalog>,
    /// The settings of the config file, before any operator change.
    base: BackupConfig,
    /// The operator's changes (`dcish configure`, the console) over `base`, and where they are
    /// kept; a change is written there before it takes effect.
    overrides: std::sync::Mutex<(Overrides, Option<PathBuf>)>,
    /// The settings in force: `base` with the overrides. Read through [`Service::cfg`].
    cfg: Arc<std::sync::RwLock<BackupConfig>>,
    me: PeerId,
    name: String,
    zone: String,
    net: mpsc::Sender<NetCommand>,
    /// Making an archive and collecting garbage exclude each other.
    store_lock: Mutex<()>,
    /// One sync round at a time; it alone updates holders and acknowledgements.
    sync_lock: Mutex<()>,
    /// A sync was asked for while one ran: the running one goes round again.
    resync: std::sync::atomic::AtomicBool,
    /// Blades taken over here whose restore failed: no archive is made of them until an
    /// operator's restore succeeds.
    unrestored: std::sync::Mutex<HashSet<String>>,
    /// When each member was last seen to die or leave, for the repair grace.
    gone_since: std::sync::Mutex<HashMap<PeerId, Instant>>,
    /// Members to ask for archives of this node's blade that it has not seen (made by an earlier
    /// node acting as it): those seen alive again since the last sync round, and those a
    /// takeover could not ask. Each stays here until it answers or is no longer up.
    returned: std::sync::Mutex<HashSet<PeerId>>,
    started: Instant,
    stats: Arc<super::Stats>,
    seats: Arc<super::SeatEpochs>,
    /// The steps of this node's latest takeover (`dcish status`).
    steps: TakeoverSteps,
    /// The package installer, for deploys from and to this node.
    packages: Option<Arc<crate::package::install::Installer>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs blocking work off the event loop's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("worker failed: {e}"))
}

impl Service {
    /// A service over `store` and `catalog` for this node (its id, name and zone).
    pub fn new(
        store: Arc<dyn BlockStore>,
        catalog: Arc<dyn Catalog>,
        cfg: BackupConfig,
        (me, name, zone): (PeerId, String, String),
        net: mpsc::Sender<NetCommand>,
        (stats, seats, steps): (Arc<super::Stats>, Arc<super::SeatEpochs>, TakeoverSteps),
        packages: Option<Arc<crate::package::install::Installer>>,
    ) -> Arc<Service> {
        Arc::new(Service {
            store,
            catalog,
            base: cfg.clone(),
            overrides: std::sync::Mutex::new((Overrides::default(), None)),
            cfg: Arc::new(std::sync::RwLock::new(cfg)),
            me,
            name,
            zone,
            net,
            store_lock: Mutex::new(()),
            sync_lock: Mutex::new(()),
            resync: std::sync::atomic::AtomicBool::new(false),
            gone_since: std::sync::Mutex::new(HashMap::new()),
            returned: std::sync::Mutex::new(HashSet::new()),
            unrestored: std::sync::Mutex::new(HashSet::new()),
            started: Instant::now(),
            stats,
            seats,
            steps,
            packages,
        })
    }

    /// The settings in force now (an operator may change them while the service runs).
    pub(crate) fn cfg(&self) -> BackupConfig {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies the operator's changes kept at `path` (if it exists) and keeps later ones there.
    pub fn load_overrides(&self, path: PathBuf) -> Result<(), String> {
        let kept = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Overrides>(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Overrides::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let cfg = self
            .base
            .with_overrides(&kept)
            .map_err(|(field, value, why)| {
                format!("{}: {field} {value:?}: {why}", path.display())
            })?;
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        *self.overrides.lock().unwrap_or_else(|e| e.into_inner()) = (kept, Some(path));
        Ok(())
    }

    /// The settings in force, as an operator sees them.
    fn settings(&self) -> BladeSettings {
        let cfg = self.cfg();
        BladeSettings {
            blade: self.name.clone(),
            root: cfg.root.as_ref().map(|r| r.display().to_string()),
            factor: cfg.factor as u64,
            exclude_dirs: cfg.exclude_dirs,
            exclude_exts: cfg.exclude_exts,
            schedule: cfg.schedule.iter().map(ToString::to_string).collect(),
            method: match cfg.method {
                crate::backup::Method::Snapshot => "snapshot",
                crate::backup::Method::Delta => "delta",
            }
            .into(),
            continuous: cfg.continuous,
        }
    }

    /// Validates an operator's change, keeps it, then puts it in force. A new root must be an
    /// existing directory; continuous mode watches the root it started with, so there the root
    /// changes only with the config file and a restart.
    fn configure(&self, change: SettingsChange) -> Result<BladeSettings, Failure> {
        let bad = |(field, value, why): (&str, String, String)| {
            fail("bad-setting", format!("{field} {value:?}: {why}"))
        };
        let mut guard = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.cfg();
        let root = change.root.map(PathBuf::from);
        if let Some(r) = root.as_ref().filter(|r| Some(*r) != current.root.as_ref()) {
            if current.continuous {
                return Err(fail(
                    "bad-setting",
                    "continuous mode watches the root it started with: change it in the config file and restart",
                ));
            }
            if !r.is_dir() {
                return Err(fail(
                    "bad-setting",
                    format!(
                        "backup.root {:?}: not a directory on {}",
                        r.display().to_string(),
                        self.name
                    ),
                ));
            }
        }
        let mut kept = guard.0.clone();
        kept.merge(Overrides {
            root,
            replication_factor: change
                .factor
                .map(|f| usize::try_from(f).unwrap_or(usize::MAX)),
            exclude_dirs: change.exclude_dirs,
            exclude_extensions: change.exclude_exts,
            schedule: change.schedule,
        });
        let cfg = self.base.with_overrides(&kept).map_err(bad)?;
        if let Some(path) = &guard.1 {
            let json = serde_json::to_vec_pretty(&kept).map_err(|e| fail("internal", e))?;
            crate::datadir::write_atomic(path, &json, 0o600)
                .map_err(|e| fail("not-saved", format!("the change is not made: {e}")))?;
        }
        guard.0 = kept;
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        tracing::info!(blade = %self.name, "backup settings changed by an operator");
        Ok(self.settings())
    }

    /// The package installer, if this agent has one.
    pub(crate) fn packages(&self) -> Option<Arc<crate::package::install::Installer>> {
        self.packages.clone()
    }

    /// The block store.
    pub(crate) fn store(&self) -> Arc<dyn BlockStore> {
        self.store.clone()
    }

    /// This node's blade name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// This node's id.
    pub(crate) fn local_id(&self) -> PeerId {
        self.me
    }

    /// The service's counters.
    pub(crate) fn stats(&self) -> &super::Stats {
        &self.stats
    }

    /// Runs until the agent stops (its channels close).
    pub async fn run(
        self: Arc<Self>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut control: mpsc::Receiver<ControlCall>,
        mut events: broadcast::Receiver<Event>,
        mut retrieve: Option<mpsc::Receiver<crate::router::Retrieve>>,
    ) {
        let mut sync = tokio::time::interval(self.cfg().sync_interval);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gc = tokio::time::interval(self.cfg().gc_interval);
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        gc.tick().await; // not at start-up
        let mut scrub = tokio::time::interval(self.cfg().scrub_interval);
        scrub.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scrub.tick().await;
        let slots = Arc::new(tokio::sync::Semaphore::new(INBOUND_PARALLEL));
        let (_watcher, mut changes) = match self.watch() {
            Some((w, rx)) => (Some(w), Some(rx)),
            None => (None, None),
        };
        // In continuous mode the first archive is made at start; later ones a moment after a
        // change, so that a burst of writes makes one archive.
        let mut change_due: Option<tokio::time::Instant> =
            changes.as_ref().map(|_| tokio::time::Instant::now());
        let continuous_running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            let due = next_due(&self.cfg().schedule, now_ms() / 1000)
                .map(|at| Duration::from_secs(at).saturating_sub(Duration::from_millis(now_ms())))
                .unwrap_or(Duration::from_secs(86_400));
            tokio::select! {
                request = inbound.recv() => {
                    let Some(request) = request else { return };
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let me = self.clone();
                    tokio::spawn(async move {
                        let token = request.token;
                        let response = me.handle(request).await;
                        let _ = me.net.send(NetCommand::Respond { token, response: protocol::encode(&response) }).await;
                        drop(permit);
                    });
                }
                call = control.recv() => {
                    let Some((request, reply)) = call else { return };
                    let me = self.clone();
                    tokio::spawn(async move {
                        let answer = match request {
                            super::Operator::Backup(r) => me.control(r, true).await,
                            super::Operator::Package(r) => crate::package::deploy::control(&me, r).await,
                            super::Operator::TakeOver(args) => return me.take_over(args, reply).await,
                        };
                        let _ = reply.send(answer);
                    });
                }
                Some((app, reply)) = async { retrieve.as_mut()?.recv().await }, if retrieve.is_some() => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(crate::package::deploy::retrieve(&me, &app).await);
                    });
                }
                event = events.recv() => match event {
                    Ok(e) => self.on_event(&e),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = sync.tick() => self.clone().spawn_sync(false),
                Some(()) = async { changes.as_mut()?.recv().await }, if changes.is_some() => {
                    change_due.get_or_insert_with(|| tokio::time::Instant::now() + CHANGE_SETTLE);
                }
                _ = tokio::time::sleep_until(change_due.unwrap_or_else(tokio::time::Instant::now)), if change_due.is_some() => {
                    use std::sync::atomic::Ordering;
                    if continuous_running.swap(true, Ordering::SeqCst) {
                        // One continuous backup at a time; this change is taken after it.
                        change_due = Some(tokio::time::Instant::now() + CHANGE_SETTLE);
                        continue;
                    }
                    change_due = None;
                    let (me, running) = (self.clone(), continuous_running.clone());
                    tokio::spawn(async move {
                        if let Err((_, e)) = me.backup(false).await {
                            tracing::error!("continuous backup failed: {e}");
                        }
                        running.store(false, Ordering::SeqCst);
                    });
                }
                _ = scrub.tick() => {
                    let me = self.clone();
                    tokio::spawn(async move { me.scrub().await });
                }
                _ = gc.tick() => {
                    let me = self.clone();
                    tokio::spawn(async move { me.collect().await });
                }
                _ = tokio::time::sleep(due), if !self.cfg().schedule.is_empty() => {
                    let me = self.clone();
                    tokio::spawn(async move { me.backup_all().await });
                    // Past the due second, so the same rule does not fire twice.
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                }
            }
        }
    }

    fn on_event(self: &Arc<Self>, e: &Event) {
        let mut gone = self.gone_since.lock().unwrap_or_else(|p| p.into_inner());
        match e.kind {
            EventKind::Dead | EventKind::Left => {
                gone.entry(e.id).or_insert_with(Instant::now);
            }
            EventKind::Joined | EventKind::Alive => {
                gone.remove(&e.id);
                drop(gone);
                if e.kind == EventKind::Alive {
                    self.returned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(e.id);
                }
                // A returning holder is synced at once rather than at the next round.
                self.clone().spawn_sync(true);
            }
            EventKind::Suspect
            | EventKind::MetaChanged
            | EventKind::LinkUnreachable
            | EventKind::Degraded
            | EventKind::Recovered => {}
        }
    }

    /// Starts a peersync round unless one is running; `again` (a new archive, a holder back)
    /// asks a running round for another right after it.
    fn spawn_sync(self: Arc<Self>, again: bool) {
        use std::sync::atomic::Ordering;
        if again {
            self.resync.store(true, Ordering::SeqCst);
        }
        tokio::spawn(async move {
            if let Ok(_guard) = self.sync_lock.try_lock() {
                // A new archive made during a round is pushed by the next one, at once. A
                // periodic tick asks for no such round: when a holder is alive but out of reach,
                // each round waits out its timeout, longer than the interval, and rounds would
                // follow one another without ever letting `dcish backup now` have the lock.
                loop {
                    self.resync.store(false, Ordering::SeqCst);
                    self.sync_round().await;
                    if !self.resync.load(Ordering::SeqCst) {
                        break;
                    }
                }
            }
        });
    }

    /// Watches the backup root when continuous mode is on: every change wakes `changes`.
    fn watch(&self) -> Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
        use notify::Watcher;
        let cfg = self.cfg();
        let root = cfg.root.as_ref().filter(|_| cfg.continuous)?;
        let (tx, rx) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let is_read = event.as_ref().is_ok_and(|e| e.kind.is_access());
            if !is_read {
                let _ = tx.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("continuous backup off: cannot watch: {e}");
                return None;
            }
        };
        if let Err(e) = watcher.watch(root, notify::RecursiveMode::Recursive) {
            tracing::error!(root = %root.display(), "continuous backup off: cannot watch: {e}");
            return None;
        }
        tracing::info!(root = %root.display(), "continuous backup: watching for changes");
        Some((watcher, rx))
    }

    pub(crate) async fn call(&self, to: PeerId, request: &Request) -> Result<Response, String> {
        let (tx, rx) = oneshot::channel();
        self.net
            .send(NetCommand::Send {
                to,
                request: protocol::encode(&(self.stamp(request), request)),
                reply: tx,
            })
            .await
            .map_err(|_| "the agent is stopping".to_string())?;
        // A forwarded operator command (a restore) answers when it is done.
        let limit = match request {
            Request::Control(_) | Request::Package(_) => FORWARDED_TIMEOUT,
            Request::Have { .. }
            | Request::Put { .. }
            | Request::Commit { .. }
            | Request::Sync { .. }
            | Request::Get { .. }
            | Request::Catalog { .. } => CALL_TIMEOUT,
        };
        let bytes = tokio::time::timeout(limit, rx)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|_| "the agent is stopping".to_string())??;
        match protocol::decode(&bytes)? {
            Response::Refused(why) => Err(format!("refused: {why}")),
            other => Ok(other),
        }
    }

    /// The epoch this node's pushes of `blade` carry: the blade's seat epoch while this node
    /// holds that seat, else 0 (a node whose blade went elsewhere pushes nothing a holder of it
    /// accepts).
    fn epoch_of(&self, blade: &str) -> u64 {
        match self.seats.get(blade) {
            Some((holder, epoch)) if holder == self.me => epoch,
            _ => 0,
        }
    }

    /// The epoch a request carries: that of the blade it is about when this node serves it (a
    /// hosted blade's pushes are checked against that blade's seat), else that of the blade this
    /// node acts as.
    fn stamp(&self, request: &Request) -> u64 {
        let about = match request {
            Request::Have { blade, .. }
            | Request::Put { blade, .. }
            | Request::Sync { blade, .. }
            | Request::Catalog { blade } => Some(blade.as_str()),
            Request::Commit { record } => Some(record.blade.as_str()),
            Request::Get { .. } | Request::Control(_) | Request::Package(_) => None,
        };
        match about.filter(|b| self.serves(b)) {
            Some(blade) => self.epoch_of(blade),
            None => self.blade().map_or(0, |b| self.epoch_of(&b)),
        }
    }

    /// The blade whose data set this node backs up now: the one it acts as (a node that took a
    /// blade over archives it under that blade's name, so that the blade's chain of archives
    /// goes on and its holders are chosen for it), else, before its own blade has a seat, its
    /// own name. A node whose blade is held elsewhere has a stale copy, and one whose lease
    /// lapsed (cut off from a majority) may have been replaced: neither makes archives.
    pub(crate) fn blade(&self) -> Option<String> {
        match (self.seats.acting(), self.seats.get(&self.name)) {
            (Some(blade), _) => Some(blade),
            (None, Some(_)) => None,
            (None, None) => Some(self.name.clone()),
        }
    }

    /// Every blade whose data set this node backs up now: [`Service::blade`], then the blades it
    /// hosts beside it (each in a data set of its own, see [`BackupConfig::data_set`]).
    pub(crate) fn blades(&self) -> Vec<String> {
        self.blade()
            .into_iter()
            .chain(self.seats.hosted())
            .collect()
    }

    /// Whether this node backs `blade` up: it is one of [`Service::blades`].
    pub(crate) fn serves(&self, blade: &str) -> bool {
        self.blades().iter().any(|b| b == blade)
    }

    /// Where `blade`'s data set lives on this node (see [`BackupConfig::data_set`]).
    fn root_of(&self, blade: &str) -> Option<PathBuf> {
        self.cfg().data_set(&self.name, blade)
    }

    /// The settings in force, shared: the agent places a blade's peerlets in its data set, which
    /// an operator's change of the root moves.
    pub fn settings_in_force(&self) -> Arc<std::sync::RwLock<BackupConfig>> {
        Arc::clone(&self.cfg)
    }

    /// The member that acts as `blade`: its seat's holder, or before any seat, the node of that
    /// name.
    fn node_of<'a>(&self, members: &'a [MemberInfo], blade: &str) -> Option<&'a MemberInfo> {
        match self.seats.get(blade) {
            Some((holder, _)) => {
                let id = holder.to_string();
                members.iter().find(|m| m.id == id)
            }
            None => members.iter().find(|m| m.name == blade),
        }
    }

    pub(crate) async fn members(&self) -> Vec<MemberInfo> {
        let (tx, rx) = oneshot::channel();
        if self.net.send(NetCommand::Members(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    fn placement(&self) -> Placement {
        Placement {
            factor: self.cfg().factor,
            manual: self.cfg().holders.clone(),
            zones: self.cfg().zones.clone(),
        }
    }

    /// The holders for `blade`, held here, and which of them can be reached now. A member dead
    /// or gone for less than the repair grace still counts as a holder (it may come back), so
    /// its data is not moved for a blip; past the grace the next node in placement order
    /// replaces it.
    fn holders(&self, blade: &str, members: &[MemberInfo]) -> (Vec<String>, HashSet<String>) {
        let me = self.me.to_string();
        self.holders_for(blade, &me, &self.zone, &self.placement(), members)
    }

    /// [`Service::holders`] for any blade, owned by `owner_id`.
    fn holders_for(
        &self,
        blade: &str,
        owner_id: &str,
        owner_zone: &str,
        placement: &Placement,
        members: &[MemberInfo],
    ) -> (Vec<String>, HashSet<String>) {
        let gone = self.gone_since.lock().unwrap_or_else(|p| p.into_inner());
        let mut candidates = Vec::new();
        let mut reachable = HashSet::new();
        for m in members.iter().filter(|m| m.id != owner_id) {
            let up = matches!(m.state.as_str(), "alive" | "suspect" | "unreachable-link");
            let within_grace =
                m.id.parse::<PeerId>()
                    .ok()
                    .map(|id| {
                        gone.get(&id).copied().unwrap_or(self.started).elapsed()
                            < self.cfg().repair_grace
                    })
                    .unwrap_or(false);
            if up || within_grace {
                candidates.push(Candidate {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    zone: m.zone.clone(),
                });
            }
            if up {
                reachable.insert(m.id.clone());
            }
        }
        let holders = placement::holders(blade, owner_id, owner_zone, &candidates, placement);
        (holders, reachable)
    }

    /// With `grace`, whether the node acting as `blade` (its seat's holder, or the member of
    /// that name) has been dead or gone for longer than the repair grace, or is unknown (the
    /// deputy's question). Without, whether it is known and not up (the entitlement question: a
    /// name nobody knows entitles no one).
    fn owner_gone(&self, members: &[MemberInfo], blade: &str, grace: bool) -> bool {
        let Some(m) = self.node_of(members, blade) else {
            return grace;
        };
        if matches!(m.state.as_str(), "alive" | "suspect" | "unreachable-link") {
            return false;
        }
        let gone = self.gone_since.lock().unwrap_or_else(|p| p.into_inner());
        let since =
            m.id.parse::<PeerId>()
                .ok()
                .and_then(|id| gone.get(&id).copied())
                .unwrap_or(self.started);
        !grace || since.elapsed() >= self.cfg().repair_grace
    }

    /// Repair without the owner: for every blade held here whose node has been gone past the
    /// grace, a holder that is still in that blade's placement brings the other holders up to
    /// date from its own copy (they report what they have with `Catalog`; nothing is forgotten).
    async fn deputy_round(&self) {
        let Ok(all) = self.catalog.all() else {
            return;
        };
        let served = self.blades();
        let blades: std::collections::BTreeSet<String> = all
            .iter()
            .filter(|r| !served.contains(&r.blade))
            .map(|r| r.blade.clone())
            .collect();
        if blades.is_empty() {
            return;
        }
        let members = self.members().await;
        let me = self.me.to_string();
        for blade in blades {
            if !self.owner_gone(&members, &blade, true) {
                continue;
            }
            let records: Vec<ArchiveRecord> =
                all.iter().filter(|r| r.blade == blade).cloned().collect();
            let factor = records.iter().map(|r| r.factor).max().unwrap_or(0) as usize;
            let owner_id = self
                .node_of(&members, &blade)
                .map(|m| m.id.clone())
                .unwrap_or_default();
            let placement = Placement {
                factor,
                ..Placement::default()
            };
            let (holders, reachable) =
                self.holders_for(&blade, &owner_id, "", &placement, &members);
            if !holders.contains(&me) {
                continue;
            }
            for h in holders
                .iter()
                .filter(|h| **h != me && reachable.contains(*h))
            {
                let Ok(peer) = h.parse::<PeerId>() else {
                    continue;
                };
                let theirs: Vec<ArchiveId> = match self
                    .call(
                        peer,
                        &Request::Catalog {
                            blade: blade.clone(),
                        },
                    )
                    .await
                {
                    Ok(Response::Records(rs)) => rs.iter().map(|r| r.id).collect(),
                    Ok(_) | Err(_) => continue,
                };
                for r in records.iter().filter(|r| !theirs.contains(&r.id)) {
                    match self.push(peer, r).await {
                        Ok(()) => {
                            tracing::info!(%blade, archive = %r.id, holder = %h, "repaired a gone node's archive from this holder's copy")
                        }
                        Err(e) => {
                            tracing::warn!(%blade, holder = %h, "repair from this holder failed: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// One peersync round: the deputies' repairs, then each blade this node backs up.
    async fn sync_round(self: &Arc<Self>) {
        self.deputy_round().await;
        let returned =
            std::mem::take(&mut *self.returned.lock().unwrap_or_else(|p| p.into_inner()));
        let blades: Vec<String> = self
            .blades()
            .into_iter()
            .filter(|b| self.root_of(b).is_some())
            .collect();
        for blade in &blades {
            self.sync_blade(blade, &returned).await;
        }
        let incomplete: usize = blades
            .iter()
            .map(|b| {
                self.catalog
                    .list(b)
                    .map(|rs| rs.iter().filter(|r| !r.complete()).count())
                    .unwrap_or(0)
            })
            .sum();
        self.stats
            .under_replicated
            .store(incomplete as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Peersync for one blade: age, place, and bring every reachable holder up to date; members
    /// back from away (`returned`) are asked for archives made out of this node's sight.
    async fn sync_blade(self: &Arc<Self>, blade: &str, returned: &HashSet<PeerId>) {
        let blade = blade.to_string();
        if let Err(e) = self.age(&blade).await {
            tracing::warn!("aging failed: {e}");
        }
        let members = self.members().await;
        let (holders, reachable) = self.holders(&blade, &members);
        let since = self.aged_before();
        // Holders are synced below; other members back from away are asked here, side by side
        // (one out of reach costs the round one timeout, not one each).
        let asks = returned
            .iter()
            .copied()
            .filter(|p| !holders.contains(&p.to_string()))
            .map(|peer| {
                let (blade, holders) = (&blade, &holders);
                async move { (peer, self.take_in(blade, peer, holders, since).await) }
            });
        for (peer, taken) in futures::future::join_all(asks).await {
            if taken.is_none() && reachable.contains(&peer.to_string()) {
                self.returned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(peer);
            }
        }
        let Ok(records) = self.catalog.list(&blade) else {
            return;
        };
        if records.is_empty() {
            return;
        }
        for r in &records {
            if r.holders != holders || r.factor != self.cfg().factor as u64 {
                let mut r = r.clone();
                r.holders = holders.clone();
                r.factor = self.cfg().factor as u64;
                let _ = self.catalog.put(&r);
            }
        }
        let keep: Vec<ArchiveId> = records.iter().map(|r| r.id).collect();
        let jobs = holders
            .iter()
            .filter(|h| reachable.contains(*h))
            .filter_map(|h| h.parse::<PeerId>().ok())
            .map(|h| self.sync_holder(&blade, h, &holders, keep.clone(), since));
        let results = futures::future::join_all(jobs).await;
        for (peer, result) in results {
            let held = match result {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(holder = %peer, "peersync failed: {e}");
                    continue;
                }
            };
            for id in held {
                self.mark_acked(&blade, id, &peer.to_string());
            }
        }
        self.report_replicas(&blade, &holders);
        self.release_former_holders(&blade, &holders, &reachable)
            .await;
    }

    /// After a takeover of `blade`, the replicas step: how many of its archives are back on as
    /// many holders as the factor asks.
    fn report_replicas(&self, blade: &str, holders: &[String]) {
        // Once the takeover is through: its archives adopted, the last of its own steps.
        if !self.steps.finished(blade, Kind::Adopt) {
            return;
        }
        let Ok(records) = self.catalog.list(blade) else {
            return;
        };
        if records.is_empty() {
            return;
        }
        let complete = records.iter().filter(|r| r.complete()).count();
        let what = if complete == records.len() {
            format!(
                "every archive ({complete}) on {} holders: back to the factor",
                holders.len()
            )
        } else {
            format!(
                "{complete} of {} archives on their {} holders; the next sync rounds push the rest",
                records.len(),
                holders.len()
            )
        };
        self.steps.set(blade, Kind::Replicas, what);
    }

    /// Once every archive is complete on the current holders, nodes that held it before (a
    /// placement change, a manual list edited) are told to forget this blade, and their garbage
    /// collection frees the space. Never earlier: until then they are copies that count.
    async fn release_former_holders(
        self: &Arc<Self>,
        blade: &str,
        holders: &[String],
        reachable: &HashSet<String>,
    ) {
        let Ok(records) = self.catalog.list(blade) else {
            return;
        };
        if records.is_empty() || !records.iter().all(|r| r.complete()) {
            return;
        }
        let former: HashSet<String> = records
            .iter()
            .flat_map(|r| r.acked.iter())
            .filter(|a| !holders.contains(a) && reachable.contains(*a))
            .cloned()
            .collect();
        for node in former {
            let Ok(peer) = node.parse::<PeerId>() else {
                continue;
            };
            // It forgets every archive of the blade: first take in any this node lacks.
            if self.take_in(blade, peer, holders, self.aged_before()).await != Some(0) {
                continue;
            }
            let forget = Request::Sync {
                blade: blade.to_string(),
                keep: Vec::new(),
                forget: Forget::All,
            };
            match self.call(peer, &forget).await {
                Ok(_) => {
                    tracing::info!(node = %node, "former holder released: it is no longer in the placement");
                    for r in &records {
                        if r.acked.contains(&node) {
                            let mut r = r.clone();
                            r.acked.retain(|a| *a != node);
                            let _ = self.catalog.put(&r);
                        }
                    }
                }
                Err(e) => tracing::debug!(node = %node, "cannot release former holder: {e}"),
            }
        }
    }

    fn mark_acked(&self, blade: &str, id: ArchiveId, holder: &str) {
        let Ok(records) = self.catalog.list(blade) else {
            return;
        };
        if let Some(r) = records.iter().find(|r| r.id == id) {
            if !r.acked.iter().any(|a| a == holder) {
                let mut r = r.clone();
                r.acked.push(holder.into());
                let _ = self.catalog.put(&r);
            }
        }
    }

    /// Tells one holder which archives exist and which it may forget, takes in those it keeps
    /// that this node does not know, and pushes those it lacks, oldest first.
    async fn sync_holder(
        self: &Arc<Self>,
        blade: &str,
        holder: PeerId,
        placement: &[String],
        keep: Vec<ArchiveId>,
        aged_before: u64,
    ) -> (PeerId, Result<Vec<ArchiveId>, String>) {
        let result = async {
            let mut have = match self
                .call(
                    holder,
                    &Request::Sync {
                        blade: blade.to_string(),
                        keep: keep.clone(),
                        // What aging removed here, holders forget; what is newer and unknown
                        // here, they keep, and this node takes in.
                        forget: Forget::MadeBefore(aged_before),
                    },
                )
                .await?
            {
                Response::Held(h) => h,
                other => return Err(format!("unexpected answer {other:?}")),
            };
            if have.iter().any(|id| !keep.contains(id)) {
                self.take_in(blade, holder, placement, aged_before).await;
            }
            let records = self.catalog.list(blade).map_err(|e| e.to_string())?;
            let lacking: Vec<&ArchiveRecord> =
                records.iter().filter(|r| !have.contains(&r.id)).collect();
            for r in lacking {
                self.push(holder, r).await?;
                have.push(r.id);
                self.mark_acked(blade, r.id, &holder.to_string());
            }
            Ok(have)
        }
        .await;
        (holder, result)
    }

    /// Takes in the archives of `blade` made since `made_since` that node `from` keeps and this
    /// node does not know: an earlier node acting as the blade made them out of this one's sight
    /// (a takeover that reached none of their holders). Each record comes with every block it
    /// needs, fetched from `from` and checked. Answers how many such archives are still only
    /// there (one that could not be fetched is tried again next round), or `None` when `from`
    /// did not answer.
    async fn take_in(
        self: &Arc<Self>,
        blade: &str,
        from: PeerId,
        placement: &[String],
        made_since: u64,
    ) -> Option<usize> {
        let request = Request::Catalog {
            blade: blade.to_string(),
        };
        let Ok(Response::Records(records)) = self.call(from, &request).await else {
            return None;
        };
        let known: HashSet<ArchiveId> = self
            .catalog
            .list(blade)
            .ok()?
            .iter()
            .map(|r| r.id)
            .collect();
        let peers = vec![from];
        let mut left = 0;
        // No archive can come from an epoch after this node's own seat: such a record is bogus.
        let epoch = self.epoch_of(blade);
        for mut record in records.into_iter().filter(|r| {
            r.blade == blade
                && !known.contains(&r.id)
                && r.time_ms >= made_since
                && r.id.epoch <= epoch
        }) {
            let source = self.net_source(std::iter::once(&peers));
            let r = record.clone();
            if let Err(e) = blocking(move || source.fill(&r)).await.and_then(|x| x) {
                tracing::warn!(%blade, archive = %record.id, %from, "cannot take in an archive made out of this node's sight: {e}");
                left += 1;
                continue;
            }
            record.factor = self.cfg().factor as u64;
            record.holders = placement.to_vec();
            record.acked = vec![from.to_string()];
            match self.catalog.put(&record) {
                Ok(()) => {
                    tracing::info!(%blade, archive = %record.id, %from, "took in an archive made out of this node's sight")
                }
                Err(e) => {
                    tracing::warn!(%blade, archive = %record.id, "cannot record an archive taken in: {e}");
                    left += 1;
                }
            }
        }
        Some(left)
    }

    /// The time before which this blade's archives are past the aging period (0: no aging).
    fn aged_before(&self) -> u64 {
        self.cfg()
            .aging
            .map_or(0, |a| now_ms().saturating_sub(a.as_millis() as u64))
    }

    /// Pushes one archive to one holder: only the blocks it lacks, then the record.
    async fn push(&self, holder: PeerId, record: &ArchiveRecord) -> Result<(), String> {
        let store = self.store.clone();
        let r = record.clone();
        let mut ids: Vec<BlockId> = blocking(move || archive_blocks(&r, &LocalSource(&*store)))
            .await?
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        ids.sort();
        let mut missing = Vec::new();
        for batch in ids.chunks(MAX_HAVE_IDS) {
            let request = Request::Have {
                blade: record.blade.clone(),
                ids: batch.to_vec(),
            };
            match self.call(holder, &request).await? {
                Response::Missing(m) => {
                    missing.extend(m.into_iter().filter(|id| batch.contains(id)))
                }
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
        let batches: Vec<Vec<BlockId>> =
            missing.chunks(MAX_PUT_BLOCKS).map(<[_]>::to_vec).collect();
        futures::stream::iter(batches)
            .map(|batch| async move {
                let store = self.store.clone();
                let blocks = blocking(move || {
                    batch
                        .into_iter()
                        .map(|id| match store.get(&id) {
                            Ok(Some(b)) => Ok((id, protocol::Bytes(b))),
                            Ok(None) => Err(format!("block {id:?} vanished from the local store")),
                            Err(e) => Err(e.to_string()),
                        })
                        .collect::<Result<Vec<_>, String>>()
                })
                .await??;
                self.put_blocks(holder, &record.blade, blocks).await
            })
            .buffer_unordered(PUSH_PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        match self
            .call(
                holder,
                &Request::Commit {
                    record: record.clone(),
                },
            )
            .await?
        {
            Response::Done => {
                tracing::info!(holder = %holder, archive = %record.id, blocks = missing.len(), "archive pushed");
                Ok(())
            }
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Sends one `Put` of at most [`MAX_PUT_BLOCKS`] blocks to a holder.
    async fn put_blocks(
        &self,
        holder: PeerId,
        blade: &str,
        blocks: Vec<(BlockId, protocol::Bytes)>,
    ) -> Result<(), String> {
        let (n, size) = (
            blocks.len() as u64,
            blocks.iter().map(|(_, b)| b.0.len() as u64).sum::<u64>(),
        );
        super::Stats::add(&self.stats.pushed_blocks, n);
        super::Stats::add(&self.stats.pushed_bytes, size);
        let request = Request::Put {
            blade: blade.to_owned(),
            blocks,
        };
        match self.call(holder, &request).await? {
            Response::Done => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Pushes the batches of new blocks a backup's scan writes, as it writes them, to the holders
    /// reachable now: the network and the holders work while the scan reads on. Only a head
    /// start: the sync round after the scan still asks each holder what it lacks (`Have`) before
    /// the archive is committed there, so a batch lost here is simply sent again then.
    async fn push_early(
        &self,
        blade: &str,
        holders: &[PeerId],
        batches: mpsc::Receiver<Vec<(BlockId, Vec<u8>)>>,
    ) -> HashMap<PeerId, u64> {
        if holders.is_empty() {
            // The receiver goes, and the scan queues nothing.
            return HashMap::new();
        }
        let failed: std::sync::Mutex<HashSet<PeerId>> = Default::default();
        let pushed: std::sync::Mutex<HashMap<PeerId, u64>> = Default::default();
        let (failed, pushed_ref) = (&failed, &pushed);
        futures::stream::unfold(
            batches,
            |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
        )
        .flat_map(|batch| {
            // Each `Put` copies its blocks only when it starts, so that no more than the puts in
            // flight hold copies beside the batch.
            let batch = Arc::new(batch);
            let puts: Vec<(PeerId, Arc<_>, usize)> = (0..batch.len().div_ceil(MAX_PUT_BLOCKS))
                .flat_map(|i| holders.iter().map(move |h| (*h, i)))
                .map(|(h, i)| (h, batch.clone(), i))
                .collect();
            futures::stream::iter(puts)
        })
        .map(|(holder, batch, i)| async move {
            if failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&holder)
            {
                return;
            }
            let blocks: Vec<(BlockId, protocol::Bytes)> = batch
                .chunks(MAX_PUT_BLOCKS)
                .nth(i)
                .unwrap_or_default()
                .iter()
                .map(|(id, b)| (*id, protocol::Bytes(b.clone())))
                .collect();
            drop(batch);
            let n = blocks.len() as u64;
            match self.put_blocks(holder, blade, blocks).await {
                Ok(()) => {
                    *pushed_ref
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(holder)
                        .or_default() += n
                }
                Err(e) => {
                    // The sync round sends it again, or reports the holder.
                    tracing::debug!(%holder, "early push stopped: {e}");
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(holder);
                }
            }
        })
        .buffer_unordered(PUSH_PARALLEL * holders.len().max(1))
        .collect::<()>()
        .await;
        pushed.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes this blade's archives past the aging period, but never one a kept archive needs
    /// (its line of parents back to a snapshot) nor the latest.
    async fn age(&self, blade: &str) -> Result<(), String> {
        if self.cfg().aging.is_none() {
            return Ok(());
        }
        let records = self.catalog.list(blade).map_err(|e| e.to_string())?;
        let cutoff = self.aged_before();
        // Kept: the archives inside the period and the latest, each with its line of parents.
        let mut needed: HashSet<ArchiveId> = HashSet::new();
        for r in records
            .iter()
            .filter(|r| r.time_ms >= cutoff)
            .chain(records.last())
        {
            needed.extend(chain(&records, r.id).iter().map(|a| a.id));
        }
        for r in records
            .iter()
            .filter(|r| r.time_ms < cutoff && !needed.contains(&r.id))
        {
            tracing::info!(archive = %r.id, "aging removes archive");
            self.catalog
                .remove(&r.blade, r.id)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Removes blocks no archive in the catalog references, once older than the grace. Stops
    /// without removing anything if any manifest cannot be read.
    pub async fn collect(self: &Arc<Self>) -> u64 {
        let _guard = self.store_lock.lock().await;
        let (store, catalog, grace) = (
            self.store.clone(),
            self.catalog.clone(),
            self.cfg().gc_grace,
        );
        let result = blocking(move || -> Result<u64, String> {
            let mut live: HashSet<BlockId> = HashSet::new();
            for r in catalog.all().map_err(|e| e.to_string())? {
                live.extend(archive_blocks(&r, &LocalSource(&*store)).map_err(|e| e.to_string())?);
            }
            let now = SystemTime::now();
            let mut removed = 0;
            for (id, t) in store.list().map_err(|e| e.to_string())? {
                let old = now.duration_since(t).unwrap_or_default() >= grace;
                if old && !live.contains(&id) {
                    store.remove(&id).map_err(|e| e.to_string())?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .and_then(|r| r);
        match result {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(blocks = n, "garbage collection removed unreferenced blocks");
                }
                let served = self.blades();
                let held = self
                    .catalog
                    .all()
                    .map(|rs| rs.iter().filter(|r| !served.contains(&r.blade)).count())
                    .unwrap_or(0);
                self.stats
                    .held_archives
                    .store(held as u64, std::sync::atomic::Ordering::Relaxed);
                n
            }
            Err(e) => {
                tracing::warn!("garbage collection skipped: {e}");
                0
            }
        }
    }

    /// Reads every stored block and checks it against its id. A corrupt block is removed; an
    /// archive of this blade that needed it gets it back from a holder that has it, and an
    /// archive held for another blade is forgotten, so that its owner pushes it again at the next
    /// sync round (only the missing blocks cross the network).
    pub async fn scrub(self: &Arc<Self>) {
        let _guard = self.store_lock.lock().await;
        let store = self.store.clone();
        let bad = blocking(move || -> Result<u64, String> {
            let mut bad = 0;
            for (id, _) in store.list().map_err(|e| e.to_string())? {
                let ok =
                    matches!(store.get(&id), Ok(Some(enc)) if decode_verified(&id, &enc).is_ok());
                if !ok {
                    tracing::error!(block = ?id, "scrub found a corrupt block; removed");
                    store.remove(&id).map_err(|e| e.to_string())?;
                    bad += 1;
                }
            }
            Ok(bad)
        })
        .await
        .and_then(|r| r);
        let bad = match bad {
            Ok(n) => n,
            Err(e) => return tracing::warn!("scrub stopped: {e}"),
        };
        super::Stats::add(&self.stats.corrupt, bad);
        if bad == 0 {
            return;
        }
        let served = self.blades();
        for r in self.catalog.all().unwrap_or_default() {
            let store = self.store.clone();
            let rec = r.clone();
            let whole = blocking(move || {
                archive_blocks(&rec, &LocalSource(&*store))
                    .map(|ids| ids.iter().all(|id| store.touch(id).unwrap_or(false)))
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if whole {
                continue;
            }
            if !served.contains(&r.blade) {
                tracing::warn!(blade = %r.blade, archive = %r.id, "held archive damaged; forgotten until its owner pushes it again");
                let _ = self.catalog.remove(&r.blade, r.id);
                continue;
            }
            let source = NetSource {
                service: self.clone(),
                runtime: tokio::runtime::Handle::current(),
                peers: r.acked.iter().filter_map(|p| p.parse().ok()).collect(),
            };
            let id = r.id;
            let repaired = blocking(move || source.fill(&r)).await.and_then(|x| x);
            match repaired {
                Ok(()) => {
                    tracing::info!(archive = %id, "scrub repaired the archive from its holders")
                }
                Err(e) => tracing::error!(archive = %id, "scrub cannot repair the archive: {e}"),
            }
        }
    }

    /// Makes an archive of the blade this node acts as now and pushes it; with `wait`, answers
    /// once it is complete.
    async fn backup(self: &Arc<Self>, wait: bool) -> Result<ArchiveRecord, Failure> {
        // Once another node holds this node's blade, what is here is a stale copy: an archive
        // of it would be the blade's latest and restore wrong.
        let Some(blade) = self.blade() else {
            return Err(self.not_holder());
        };
        self.backup_of(blade, wait).await
    }

    /// A scheduled backup: an archive of every blade this node backs up, one after another.
    async fn backup_all(self: &Arc<Self>) {
        let blades = self.blades();
        if blades.is_empty() {
            if let Err((_, e)) = self.backup(false).await {
                tracing::error!("scheduled backup failed: {e}");
            }
        }
        for blade in blades {
            if let Err((_, e)) = self.backup_of(blade.clone(), false).await {
                tracing::error!(%blade, "scheduled backup failed: {e}");
            }
        }
    }

    /// Makes an archive of `blade`, served here, and pushes it; with `wait`, answers once it is
    /// complete.
    async fn backup_of(
        self: &Arc<Self>,
        blade: String,
        wait: bool,
    ) -> Result<ArchiveRecord, Failure> {
        if self
            .unrestored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&blade)
        {
            return Err(fail(
                "not-restored",
                format!("{blade} was taken over here but its restore failed: restore it (dcish restore {blade}) before backing it up"),
            ));
        }
        let Some(root) = self.root_of(&blade) else {
            return Err(fail(
                "no-backup-root",
                format!("{} has no backup root (--backup-root)", self.name),
            ));
        };
        let settings = ScanSettings {
            root,
            exclude_dirs: self.cfg().exclude_dirs.clone(),
            exclude_exts: self.cfg().exclude_exts.clone(),
            compress: self.cfg().compress,
        };
        let members = self.members().await;
        let (holders, reachable) = self.holders(&blade, &members);
        let early: Vec<PeerId> = holders
            .iter()
            .filter(|h| reachable.contains(*h))
            .filter_map(|h| h.parse().ok())
            .collect();
        let record = {
            let _guard = self.store_lock.lock().await;
            // One batch queued at most: a scan faster than the network waits for it.
            let (batches, queued) = mpsc::channel(1);
            let (store, catalog, method, name, epoch) = (
                Arc::new(Tee {
                    inner: self.store.clone(),
                    batches,
                }),
                self.catalog.clone(),
                self.cfg().method,
                blade.clone(),
                self.epoch_of(&blade),
            );
            let scanning = blocking(move || {
                make_archive(
                    &settings,
                    method,
                    &*store,
                    &*catalog,
                    &name,
                    epoch,
                    now_ms(),
                )
            });
            let (made, early) = tokio::join!(scanning, self.push_early(&blade, &early, queued));
            let (record, stats) = made
                .map_err(|e| fail("backup-failed", e))?
                .map_err(|e| fail("backup-failed", e))?;
            // Completeness is judged against the factor of the owner, wherever it is read.
            let mut record = record;
            record.factor = self.cfg().factor as u64;
            self.catalog
                .put(&record)
                .map_err(|e| fail("backup-failed", e))?;
            tracing::info!(
                %blade,
                archive = %record.id,
                kind = record.kind.as_str(),
                files = stats.files,
                read = stats.read,
                new_blocks = stats.new_blocks,
                skipped = stats.skipped,
                "archive made"
            );
            for (holder, blocks) in early {
                tracing::info!(%holder, archive = %record.id, blocks, "blocks pushed while scanning");
            }
            record
        };
        if !wait {
            self.clone().spawn_sync(true);
            return Ok(record);
        }
        {
            let _guard = self.sync_lock.lock().await;
            self.sync_round().await;
        }
        let record = self
            .catalog
            .list(&blade)
            .ok()
            .and_then(|rs| rs.into_iter().find(|r| r.id == record.id))
            .unwrap_or(record);
        if record.complete() {
            return Ok(record);
        }
        let members = self.members().await;
        let lacking: Vec<String> = record
            .holders
            .iter()
            .filter(|h| !record.acked.contains(h))
            .map(|h| name_of(&members, h))
            .collect();
        Err(fail(
            "incomplete",
            format!(
                "archive {} is stored here but incomplete: {} of {} holders have it{}",
                record.id,
                record.holders.len() - lacking.len(),
                self.cfg().factor,
                if lacking.is_empty() {
                    " (not enough live nodes)".to_string()
                } else {
                    format!("; lacking: {}", lacking.join(", "))
                }
            ),
        ))
    }

    /// This node won `args.blade` from another node: it restores the blade's latest archive from
    /// the holders into the blade's data set and answers `reply` (the blade is served from
    /// then on), then adopts the blade's archives ([`Service::adopt`]) for its backups here.
    /// Backups, collection and scrubs wait until both are done, so that no archive is made of a
    /// half-restored tree nor numbered before the adopted ones; if the restore fails, none is
    /// made until an operator's restore of the blade succeeds (an archive of what is there
    /// would become the blade's latest).
    async fn take_over(
        self: &Arc<Self>,
        mut args: RestoreArgs,
        reply: oneshot::Sender<Result<Payload, Failure>>,
    ) {
        let blade = args.blade.clone();
        if args.to.is_none() {
            args.to = self.root_of(&blade).map(|r| r.display().to_string());
        }
        let _guard = self.store_lock.lock().await;
        let steps = &self.steps;
        // The restore first, from the holders, as fast as `dcish restore`: the blade is served
        // once it is done. Keeping each fetched block in the local store on the way (for the
        // adoption) slowed it by a third on 2 cores; the adoption fetches them again instead.
        let into = args.to.clone().unwrap_or_default();
        steps.set(
            &blade,
            Kind::Restore,
            format!("restoring the latest archive into {into}"),
        );
        let restored = self.restore(args, false).await;
        steps.finish(
            &blade,
            Kind::Restore,
            match &restored {
                Ok(r) => format!(
                    "restored into {}: {} entries, {} bytes (archives applied: {})",
                    r.target, r.entries, r.bytes, r.archives
                ),
                Err((code, why)) => format!("not restored ({code}): {why}"),
            },
        );
        {
            let mut unrestored = self.unrestored.lock().unwrap_or_else(|p| p.into_inner());
            match &restored {
                Err((code, _)) if code != "no-archive" => unrestored.insert(blade.clone()),
                Ok(_) | Err(_) => unrestored.remove(&blade),
            };
        }
        let _ = reply.send(restored.map(|summary| restored_to_payload(&summary)));
        steps.set(
            &blade,
            Kind::Adopt,
            "asking the live nodes for the blade's archives",
        );
        match self.adopt(&blade).await {
            Ok(n) => {
                steps.finish(
                    &blade,
                    Kind::Adopt,
                    format!("archives adopted: {n}, every block in the local store"),
                );
                tracing::info!(%blade, archives = n, "the blade's archives adopted: its chain goes on here")
            }
            Err(e) => {
                steps.finish(
                    &blade,
                    Kind::Adopt,
                    format!("not every archive adopted: {e}"),
                );
                tracing::error!(%blade, "the blade's archives not all adopted (the next archive here starts after the last adopted one): {e}")
            }
        }
    }

    /// Makes `blade`'s archives, as the live nodes hold them, this node's own, each with every
    /// block it needs fetched into the local store: the next archive here (a snapshot, the first
    /// of this node's epoch) takes the next number, and the sync rounds push every archive to the
    /// holders placement now chooses for the blade. Stops at the first archive it cannot fetch;
    /// answers how many it adopted.
    async fn adopt(self: &Arc<Self>, blade: &str) -> Result<usize, String> {
        let (_, merged, unanswered) = self.gather(blade).await;
        // A node out of reach now (a one-way cut, a busy link) may keep an archive that no
        // other node has: it is asked at every sync round until it answers.
        self.returned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(unanswered);
        let me = self.me.to_string();
        let mut adopted = 0;
        let total = merged.len();
        for (i, (mut record, have)) in merged.into_values().enumerate() {
            self.steps.set(
                blade,
                Kind::Adopt,
                format!(
                    "fetching the blocks of archive {} ({} of {total}) from {} nodes",
                    record.id,
                    i + 1,
                    have.len()
                ),
            );
            let source = self.net_source(std::iter::once(&have));
            let r = record.clone();
            blocking(move || source.fill(&r))
                .await?
                .map_err(|e| format!("archive {}: {e}", record.id))?;
            // This node is the blade's owner now, not one of its holders.
            record.acked.retain(|a| *a != me);
            record.holders.retain(|h| *h != me);
            self.catalog.put(&record).map_err(|e| e.to_string())?;
            adopted += 1;
        }
        Ok(adopted)
    }

    /// Why a node that acts as no blade makes no archive.
    fn not_holder(&self) -> Failure {
        match self.seats.get(&self.name) {
            Some((holder, epoch)) if holder != self.me => fail(
                "not-holder",
                format!(
                    "{} is held by another node since epoch {epoch}: this node makes no archive of it",
                    self.name
                ),
            ),
            Some(_) | None => fail(
                "not-acting",
                format!(
                    "{} is not renewed by a majority now (cut off?): this node makes no archive until it is",
                    self.name
                ),
            ),
        }
    }

    /// An operator's command. `forward` is false for a command another agent forwarded, so that
    /// a command travels one hop at most.
    pub async fn control(
        self: &Arc<Self>,
        request: BackupRequest,
        forward: bool,
    ) -> Result<Payload, Failure> {
        // Settings live on the node acting as the blade.
        if let BackupRequest::GetSettings { blade }
        | BackupRequest::Configure(SettingsChange { blade, .. }) = &request
        {
            if *blade != self.name {
                if !forward {
                    return Err(fail(
                        "not-here",
                        format!("this node is {}, not {blade}", self.name),
                    ));
                }
                let blade = blade.clone();
                return self.forward(&blade, request).await;
            }
        }
        match request {
            BackupRequest::Now { blade, wait } => {
                let blade = match (blade, self.blade()) {
                    (Some(blade), _) => blade,
                    (None, Some(own)) => own,
                    (None, None) => return Err(self.not_holder()),
                };
                if !self.serves(&blade) {
                    if !forward {
                        return Err(fail(
                            "not-here",
                            format!("this node ({}) does not act as {blade}", self.name),
                        ));
                    }
                    // To the node acting as the blade now, which may have taken it over.
                    let members = self.members().await;
                    let node = self.node_of(&members, &blade).map(|m| m.name.clone());
                    return self
                        .forward(
                            node.as_deref().unwrap_or(&blade),
                            BackupRequest::Now {
                                blade: Some(blade.clone()),
                                wait,
                            },
                        )
                        .await;
                }
                let record = self.backup_of(blade, wait).await?;
                let members = self.members().await;
                Ok(archives_to_payload(&[self.info(
                    &record,
                    &record.acked,
                    &members,
                )]))
            }
            BackupRequest::Archives { blade } => {
                let (records, _, _) = self.gather(&blade).await;
                Ok(archives_to_payload(&records))
            }
            BackupRequest::GetSettings { .. } => Ok(settings_to_payload(&self.settings())),
            BackupRequest::Configure(change) => {
                self.configure(change).map(|s| settings_to_payload(&s))
            }
            BackupRequest::Ls {
                blade,
                path,
                archive,
                recursive,
            } => self.ls(&blade, &path, archive, recursive).await,
            BackupRequest::Cat {
                blade,
                path,
                archive,
            } => self.cat(&blade, &path, archive).await,
            BackupRequest::Restore(args) => match args.on.clone() {
                Some(on) if on != self.name => {
                    if !forward {
                        return Err(fail(
                            "not-here",
                            format!("this node is {}, not {on}", self.name),
                        ));
                    }
                    self.forward(
                        &on,
                        BackupRequest::Restore(RestoreArgs { on: None, ..args }),
                    )
                    .await
                }
                _ => {
                    // `forward` is false exactly when another node asked.
                    let summary = self.restore(args, !forward).await?;
                    Ok(restored_to_payload(&summary))
                }
            },
        }
    }

    async fn forward(&self, node: &str, request: BackupRequest) -> Result<Payload, Failure> {
        let members = self.members().await;
        let Some(m) = members
            .iter()
            .find(|m| m.name == node && m.state == "alive")
        else {
            return Err(fail("no-such-node", format!("no live node named {node}")));
        };
        let peer: PeerId =
            m.id.parse()
                .map_err(|_| fail("no-such-node", "bad member id"))?;
        let xml = request.to_payload().as_str().to_string();
        match self.call(peer, &Request::Control(xml)).await {
            Ok(Response::Control(Ok(xml))) => Payload::new(xml)
                .map_err(|e| fail("bad-reply", format!("{node} answered badly: {e}"))),
            Ok(Response::Control(Err(f))) => Err(f),
            Ok(other) => Err(fail("bad-reply", format!("{node} answered {other:?}"))),
            Err(e) => Err(fail("unreachable", format!("{node}: {e}"))),
        }
    }

    fn info(&self, r: &ArchiveRecord, have: &[String], members: &[MemberInfo]) -> ArchiveInfo {
        ArchiveInfo {
            id: r.id,
            time_ms: r.time_ms,
            kind: r.kind.as_str().into(),
            bytes: r.bytes,
            files: r.files,
            skipped: r.skipped,
            complete: r.complete(),
            holders: have.iter().map(|h| name_of(members, h)).collect(),
            lacking: r
                .holders
                .iter()
                .filter(|h| !r.acked.contains(h))
                .map(|h| name_of(members, h))
                .collect(),
        }
    }

    /// Every live node's records of `blade`, merged by archive: the listing, for each archive
    /// the record and the nodes that hold it, and the live nodes that did not answer.
    async fn gather(
        &self,
        blade: &str,
    ) -> (
        Vec<ArchiveInfo>,
        BTreeMap<ArchiveId, (ArchiveRecord, Vec<PeerId>)>,
        Vec<PeerId>,
    ) {
        let members = self.members().await;
        let me = self.me.to_string();
        let peers: Vec<PeerId> = members
            .iter()
            .filter(|m| m.state == "alive" && m.id != me)
            .filter_map(|m| m.id.parse().ok())
            .collect();
        let request = Request::Catalog {
            blade: blade.into(),
        };
        let answers =
            futures::future::join_all(peers.iter().map(|p| self.call(*p, &request))).await;
        let mut merged: BTreeMap<ArchiveId, (ArchiveRecord, Vec<PeerId>)> = BTreeMap::new();
        let owner = self.node_of(&members, blade).map(|m| m.id.clone());
        let mut add = |peer: PeerId, records: Vec<ArchiveRecord>| {
            for r in records.into_iter().filter(|r| r.blade == blade) {
                let from_owner = owner.as_deref() == Some(&peer.to_string());
                let slot = merged
                    .entry(r.id)
                    .or_insert_with(|| (r.clone(), Vec::new()));
                if from_owner {
                    slot.0 = r;
                }
                slot.1.push(peer);
            }
        };
        add(self.me, self.catalog.list(blade).unwrap_or_default());
        let mut unanswered = Vec::new();
        for (p, a) in peers.iter().zip(answers) {
            match a {
                Ok(Response::Records(rs)) => add(*p, rs),
                _ => unanswered.push(*p),
            }
        }
        let infos = merged
            .values()
            .map(|(r, have)| {
                let holders: Vec<String> = have
                    .iter()
                    .map(|p| p.to_string())
                    .filter(|p| Some(p) != owner.as_ref())
                    .collect();
                let mut info = self.info(r, &holders, &members);
                // Without the owner's record, count the holders that answered.
                if owner.is_none() || !have.iter().any(|p| Some(p.to_string()) == owner) {
                    info.complete = holders.len() as u64 >= r.factor.max(1);
                    info.lacking.clear();
                }
                info
            })
            .collect();
        (infos, merged, unanswered)
    }

    /// The latest archived tree of `blade`, read from whichever live nodes hold it: the seeds'
    /// read redirection, which serves a blade's files while its node is down.
    async fn archived_tree(
        self: &Arc<Self>,
        blade: &str,
        archive: Option<ArchiveRef>,
    ) -> Result<(BTreeMap<Vec<u8>, crate::backup::manifest::Entry>, NetSource), Failure> {
        let (_, merged, _) = self.gather(blade).await;
        let last = pick(blade, archive, merged.keys().copied())?;
        let records: Vec<ArchiveRecord> = merged.values().map(|(r, _)| r.clone()).collect();
        let source = self.net_source(merged.values().map(|(_, have)| have));
        blocking(move || {
            crate::backup::tree_at(&records, last, &source)
                .map(|tree| (tree, source))
                .map_err(|e| fail("unreadable", e))
        })
        .await
        .map_err(|e| fail("unreadable", e))?
    }

    async fn ls(
        self: &Arc<Self>,
        blade: &str,
        path: &str,
        archive: Option<ArchiveRef>,
        recursive: bool,
    ) -> Result<Payload, Failure> {
        use crate::backup::manifest::EntryKind;
        /// The reply travels whole: a larger recursive listing is refused.
        const MAX_LISTED: usize = 100_000;
        let (tree, _) = self.archived_tree(blade, archive).await?;
        let dir = path.trim_matches('/').as_bytes().to_vec();
        let under = |p: &[u8]| {
            let rest = if dir.is_empty() {
                Some(p)
            } else {
                p.strip_prefix(dir.as_slice())
                    .and_then(|r| r.strip_prefix(b"/"))
            };
            rest.is_some_and(|r| !r.is_empty() && (recursive || !r.contains(&b'/')))
        };
        let entries: Vec<dci_proto::backup::ListEntry> = tree
            .values()
            .filter(|e| under(&e.path) || e.path == dir && e.kind != EntryKind::Dir)
            .map(|e| dci_proto::backup::ListEntry {
                path: String::from_utf8_lossy(&e.path).into_owned(),
                kind: match e.kind {
                    EntryKind::File => "file",
                    EntryKind::Dir => "dir",
                    EntryKind::Symlink => "symlink",
                }
                .into(),
                size: e.size,
                mode: e.mode,
                mtime: e.mtime_s.max(0) as u64,
                target: e
                    .target
                    .as_ref()
                    .map(|t| String::from_utf8_lossy(t).into_owned()),
            })
            .collect();
        if entries.len() > MAX_LISTED {
            return Err(fail(
                "too-large",
                format!(
                    "{path} holds more than {MAX_LISTED} entries in {}; narrow the path",
                    which(archive)
                ),
            ));
        }
        if entries.is_empty() && !dir.is_empty() && !tree.contains_key(&dir) {
            return Err(fail(
                "no-such-path",
                format!("{blade} has no {path} in {}", which(archive)),
            ));
        }
        Ok(dci_proto::backup::listing_to_payload(&entries))
    }

    async fn cat(
        self: &Arc<Self>,
        blade: &str,
        path: &str,
        archive: Option<ArchiveRef>,
    ) -> Result<Payload, Failure> {
        use crate::backup::manifest::EntryKind;
        /// Larger files are restored, not printed: the reply travels whole.
        const MAX_CAT_BYTES: u64 = 16 << 20;
        let (tree, source) = self.archived_tree(blade, archive).await?;
        let key = path.trim_matches('/').as_bytes().to_vec();
        let Some(entry) = tree.get(&key).cloned() else {
            return Err(fail(
                "no-such-path",
                format!("{blade} has no {path} in {}", which(archive)),
            ));
        };
        if entry.kind != EntryKind::File {
            return Err(fail("not-a-file", format!("{path} is not a regular file")));
        }
        if entry.size > MAX_CAT_BYTES {
            return Err(fail(
                "too-large",
                format!(
                    "{path} has {} bytes; use dcish restore --path for files over {MAX_CAT_BYTES}",
                    entry.size
                ),
            ));
        }
        let data = blocking(move || source.fetch(&entry.blocks).map(|b| b.concat()))
            .await
            .map_err(|e| fail("unreadable", e))?
            .map_err(|e| fail("unreadable", e))?;
        Ok(dci_proto::backup::file_to_payload(path, &data))
    }

    /// Restores on this node.
    async fn restore(
        self: &Arc<Self>,
        args: RestoreArgs,
        from_peer: bool,
    ) -> Result<RestoreSummary, Failure> {
        let target: PathBuf = match (&args.to, &self.cfg().root) {
            (Some(to), _) => to.into(),
            (None, Some(root)) => root.clone(),
            (None, None) => {
                return Err(fail(
                    "no-target",
                    format!("{} has no backup root; give --to DIR", self.name),
                ))
            }
        };
        if !target.is_absolute() {
            return Err(fail(
                "bad-target",
                format!("{} is not an absolute path", target.display()),
            ));
        }
        // Any member of the mesh may forward a restore: it writes only where this node's
        // operator allowed, not wherever the agent's user can.
        if from_peer && args.to.is_some() {
            let cfg = self.cfg();
            let allowed = cfg.root.iter().chain(&cfg.restore_into);
            if !allowed.clone().any(|dir| within(&target, dir)) {
                let dirs: Vec<String> = allowed.map(|d| d.display().to_string()).collect();
                return Err(fail(
                    "target-not-allowed",
                    format!(
                        "a restore asked by another node may write only under {} ([backup] restore_into on {})",
                        dirs.join(", "),
                        self.name
                    ),
                ));
            }
        }
        let globs = if args.paths.is_empty() {
            None
        } else {
            let mut b = globset::GlobSetBuilder::new();
            for p in &args.paths {
                // As in a shell: `*` stays within one name, `**` crosses directories.
                let glob = globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| fail("bad-path", format!("--path {p}: {e}")))?;
                b.add(glob);
            }
            Some(b.build().map_err(|e| fail("bad-path", e))?)
        };
        let (_, merged, _) = self.gather(&args.blade).await;
        let upto = pick(&args.blade, args.archive, merged.keys().copied())?;
        let records: Vec<ArchiveRecord> = merged.values().map(|(r, _)| r.clone()).collect();
        let chain: Vec<ArchiveRecord> = chain(&records, upto).into_iter().cloned().collect();
        let source = self.net_source(chain.iter().map(|r| &merged[&r.id].1));
        let node = self.name.clone();
        let stats = blocking(
            move || -> Result<(u64, crate::backup::restore::RestoreStats), String> {
                let mut restorer =
                    Restorer::new(&target, globs.as_ref(), &source).map_err(|e| e.to_string())?;
                for r in &chain {
                    let m = load_manifest(r, &source).map_err(|e| e.to_string())?;
                    restorer.apply(&m).map_err(|e| e.to_string())?;
                }
                Ok((
                    chain.len() as u64,
                    restorer.finish().map_err(|e| e.to_string())?,
                ))
            },
        )
        .await
        .map_err(|e| fail("restore-failed", e))?
        .map_err(|e| fail("restore-failed", e))?;
        let target = args
            .to
            .clone()
            .or(self.cfg().root.as_ref().map(|r| r.display().to_string()))
            .unwrap_or_default();
        tracing::info!(blade = %args.blade, upto = %upto, entries = stats.1.entries, "restored");
        let into_data_set = self
            .root_of(&args.blade)
            .is_some_and(|r| r.display().to_string() == target);
        if into_data_set && self.serves(&args.blade) {
            self.unrestored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&args.blade);
        }
        Ok(RestoreSummary {
            node,
            target,
            archives: stats.0,
            entries: stats.1.entries,
            bytes: stats.1.bytes,
            refused: stats.1.refused,
        })
    }

    /// A peer's request. Only a blade's owner (the member of that name) may push, commit or sync
    /// its data; anyone in the mesh (admitted by the cluster key) may read blocks and catalogs.
    async fn handle(self: &Arc<Self>, inbound: Inbound) -> Response {
        let (epoch, request): (u64, Request) = match protocol::decode(&inbound.request) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %inbound.peer, "{e}");
                super::Stats::add(&self.stats.refused, 1);
                return Response::Refused(e);
            }
        };
        // The peer speaks as `blade`: it holds the blade's seat, or is the node of that name.
        let speaks_as = |blade: &str| {
            inbound.peer_name.as_deref() == Some(blade)
                || self
                    .seats
                    .get(blade)
                    .is_some_and(|(h, _)| h == inbound.peer)
        };
        // While a blade's node is down, the holders of its data repair each other's copies.
        let members = match &request {
            Request::Have { .. } | Request::Put { .. } | Request::Commit { .. } => {
                self.members().await
            }
            Request::Sync { .. }
            | Request::Get { .. }
            | Request::Catalog { .. }
            | Request::Control(_)
            | Request::Package(_) => Vec::new(),
        };
        // An owner stamped below its blade's seat was replaced: fenced, however it was entitled.
        let stale = |blade: &str| {
            speaks_as(blade) && self.seats.get(blade).is_some_and(|(_, seat)| epoch < seat)
        };
        // The blade's owner: the node acting as it, under an epoch not below its seat's.
        let owner_of = |blade: &str| speaks_as(blade) && !stale(blade);
        let may_push = |blade: &str| {
            !stale(blade) && (owner_of(blade) || self.owner_gone(&members, blade, false))
        };
        let refuse = |blade: &str| {
            super::Stats::add(&self.stats.refused, 1);
            if stale(blade) {
                tracing::warn!(peer = %inbound.peer, %blade, epoch, "refused a push stamped with a stale epoch");
                return Response::Refused(format!(
                    "{blade} was taken over at a higher epoch than {epoch}: its old node may not push"
                ));
            }
            tracing::warn!(peer = %inbound.peer, %blade, "refused a push for a blade the peer does not own");
            Response::Refused(format!("only {blade} may push its own data"))
        };
        let store = self.store.clone();
        let catalog = self.catalog.clone();
        let stats = self.stats.clone();
        let done = |r: Result<Response, String>| r.unwrap_or_else(Response::Refused);
        match request {
            Request::Have { blade, ids } => {
                if !may_push(&blade) {
                    return refuse(&blade);
                }
                if ids.len() > MAX_HAVE_IDS {
                    return Response::Refused("too many ids".into());
                }
                done(
                    blocking(move || {
                        let mut missing = Vec::new();
                        for id in ids {
                            if !store.touch(&id).map_err(|e| e.to_string())? {
                                missing.push(id);
                            }
                        }
                        Ok(Response::Missing(missing))
                    })
                    .await
                    .and_then(|r| r),
                )
            }
            Request::Put { blade, blocks } => {
                if !may_push(&blade) {
                    return refuse(&blade);
                }
                if blocks.len() > MAX_PUT_BLOCKS {
                    return Response::Refused("too many blocks".into());
                }
                done(
                    blocking(move || {
                        let blocks: Vec<(BlockId, Vec<u8>)> =
                            blocks.into_iter().map(|(id, b)| (id, b.0)).collect();
                        for (id, enc) in &blocks {
                            if let Err(e) = decode_verified(id, enc) {
                                super::Stats::add(&stats.corrupt, 1);
                                return Err(e.to_string());
                            }
                        }
                        store.put_many(&blocks).map_err(|e| e.to_string())?;
                        super::Stats::add(&stats.received_blocks, blocks.len() as u64);
                        Ok(Response::Done)
                    })
                    .await
                    .and_then(|r| r),
                )
            }
            Request::Commit { record } => {
                if !may_push(&record.blade) {
                    return refuse(&record.blade);
                }
                done(
                    blocking(move || {
                        let ids = archive_blocks(&record, &LocalSource(&*store))
                            .map_err(|e| e.to_string())?;
                        let mut lacking = 0;
                        for id in &ids {
                            if !store.touch(id).map_err(|e| e.to_string())? {
                                lacking += 1;
                            }
                        }
                        if lacking > 0 {
                            return Err(format!(
                                "{lacking} blocks of archive {} are not here",
                                record.id
                            ));
                        }
                        catalog.put(&record).map_err(|e| e.to_string())?;
                        Ok(Response::Done)
                    })
                    .await
                    .and_then(|r| r),
                )
            }
            Request::Sync {
                blade,
                keep,
                forget,
            } => {
                if !owner_of(&blade) || stale(&blade) {
                    return refuse(&blade);
                }
                done((|| {
                    let mut held = Vec::new();
                    for r in catalog.list(&blade).map_err(|e| e.to_string())? {
                        let forgotten = !keep.contains(&r.id)
                            && match forget {
                                Forget::All => true,
                                Forget::MadeBefore(t) => r.time_ms < t,
                            };
                        if forgotten {
                            tracing::info!(%blade, archive = %r.id, "the owner no longer keeps this archive; forgotten");
                            catalog.remove(&blade, r.id).map_err(|e| e.to_string())?;
                        } else {
                            held.push(r.id);
                        }
                    }
                    Ok(Response::Held(held))
                })())
            }
            Request::Get { ids } => {
                if ids.len() > MAX_PUT_BLOCKS {
                    return Response::Refused("too many ids".into());
                }
                done(
                    blocking(move || {
                        ids.iter()
                            .map(|id| {
                                store
                                    .get(id)
                                    .map(|b| b.map(protocol::Bytes))
                                    .map_err(|e| e.to_string())
                            })
                            .collect::<Result<Vec<_>, _>>()
                            .map(Response::Blocks)
                    })
                    .await
                    .and_then(|r| r),
                )
            }
            Request::Catalog { blade } => done(
                catalog
                    .list(&blade)
                    .map(Response::Records)
                    .map_err(|e| e.to_string()),
            ),
            Request::Package(call) => {
                crate::package::deploy::handle(self, inbound.peer, call).await
            }
            Request::Control(xml) => {
                let parsed = Payload::new(xml)
                    .ok()
                    .and_then(|p| BackupRequest::from_payload(&p))
                    .and_then(Result::ok);
                let Some(request) = parsed else {
                    return Response::Refused("not a backup command".into());
                };
                tracing::info!(peer = %inbound.peer, "running a backup command forwarded by a peer");
                Response::Control(
                    self.control(request, false)
                        .await
                        .map(|p| p.as_str().to_string()),
                )
            }
        }
    }
}

/// The block store as a backup's scan sees it: every batch of new blocks it writes is also
/// queued for [`Service::push_early`].
struct Tee {
    inner: Arc<dyn BlockStore>,
    batches: mpsc::Sender<Vec<(BlockId, Vec<u8>)>>,
}

impl BlockStore for Tee {
    fn put(&self, id: &BlockId, encoded: &[u8]) -> Result<(), StoreError> {
        self.inner.put(id, encoded)
    }
    fn put_many(&self, blocks: &[(BlockId, Vec<u8>)]) -> Result<(), StoreError> {
        self.inner.put_many(blocks)?;
        // Closed when no holder is reachable; the sync round pushes these blocks then.
        if !self.batches.is_closed() {
            let _ = self.batches.blocking_send(blocks.to_vec());
        }
        Ok(())
    }
    fn get(&self, id: &BlockId) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(id)
    }
    fn touch(&self, id: &BlockId) -> Result<bool, StoreError> {
        self.inner.touch(id)
    }
    fn remove(&self, id: &BlockId) -> Result<(), StoreError> {
        self.inner.remove(id)
    }
    fn list(&self) -> Result<Vec<(BlockId, SystemTime)>, StoreError> {
        self.inner.list()
    }
}

fn name_of(members: &[MemberInfo], id: &str) -> String {
    members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| id.to_string())
}

/// Whether `target` lies inside `dir`, symlinks resolved: the longest part of `target` that exists
/// is resolved, and what follows may not climb with `..`.
fn within(target: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let mut existing = target;
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            // `..` at the end, or the root: nothing to resolve against.
            _ => return false,
        }
    }
    let Ok(mut resolved) = existing.canonicalize() else {
        return false;
    };
    for name in rest.iter().rev() {
        if name == ".." || name == "." {
            return false;
        }
        resolved.push(name);
    }
    resolved.starts_with(&dir)
}

impl Service {
    /// A block source over the nodes, other than this one, that hold any of these archives.
    fn net_source<'a>(
        self: &Arc<Self>,
        holders: impl Iterator<Item = &'a Vec<PeerId>>,
    ) -> NetSource {
        let mut peers: Vec<PeerId> = Vec::new();
        for p in holders.flatten() {
            if *p != self.me && !peers.contains(p) {
                peers.push(*p);
            }
        }
        NetSource {
            service: self.clone(),
            runtime: tokio::runtime::Handle::current(),
            peers,
        }
    }
}

/// Blocks for a restore: the local store first, then the holders, spread over them in parallel,
/// each block checked against its id; a missing or corrupt block is asked of the next holder.
struct NetSource {
    service: Arc<Service>,
    runtime: tokio::runtime::Handle,
    peers: Vec<PeerId>,
}

impl NetSource {
    /// Fetches into the local store every block of `record` that is not there yet: its
    /// manifest's, then its files'.
    fn fill(&self, record: &ArchiveRecord) -> Result<(), String> {
        let store = self.service.store.clone();
        let compress = self.service.cfg().compress;
        let refetch = |ids: Vec<BlockId>| -> Result<(), String> {
            let missing: Vec<BlockId> = ids
                .into_iter()
                .filter(|id| !store.touch(id).unwrap_or(false))
                .collect();
            for batch in missing.chunks(MAX_PUT_BLOCKS) {
                let plain = self.fetch(batch)?;
                let blocks: Vec<(BlockId, Vec<u8>)> = batch
                    .iter()
                    .zip(plain)
                    .map(|(id, p)| (*id, crate::store::encode(&p, compress)))
                    .collect();
                store.put_many(&blocks).map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        refetch(record.manifest.clone())?;
        let m = load_manifest(record, &LocalSource(&*store)).map_err(|e| e.to_string())?;
        refetch(m.block_ids().copied().collect())
    }
}

impl BlockSource for NetSource {
    fn fetch(&self, ids: &[BlockId]) -> Result<Vec<Vec<u8>>, String> {
        let mut out: Vec<Option<Vec<u8>>> = ids
            .iter()
            .map(|id| {
                self.service
                    .store
                    .get(id)
                    .ok()
                    .flatten()
                    .and_then(|enc| decode_verified(id, &enc).ok())
            })
            .collect();
        let mut attempt = 0;
        while out.iter().any(Option::is_none) {
            if attempt >= self.peers.len() {
                let missing = out.iter().filter(|b| b.is_none()).count();
                return Err(format!(
                    "{missing} blocks are on no reachable holder (or corrupt on all)"
                ));
            }
            let wanted: Vec<usize> = (0..ids.len()).filter(|i| out[*i].is_none()).collect();
            // Spread the blocks over the holders, shifted on every retry.
            let mut per_peer: HashMap<PeerId, Vec<usize>> = HashMap::new();
            for (k, i) in wanted.iter().enumerate() {
                let p = self.peers[(k + attempt) % self.peers.len()];
                per_peer.entry(p).or_default().push(*i);
            }
            let fetched =
                self.runtime
                    .block_on(futures::future::join_all(per_peer.into_iter().flat_map(
                        |(peer, idx)| {
                            idx.chunks(MAX_PUT_BLOCKS)
                                .map(|c| {
                                    let c = c.to_vec();
                                    let request = Request::Get {
                                        ids: c.iter().map(|i| ids[*i]).collect(),
                                    };
                                    let service = self.service.clone();
                                    async move { (peer, c, service.call(peer, &request).await) }
                                })
                                .collect::<Vec<_>>()
                        },
                    )));
            for (peer, idx, answer) in fetched {
                let blocks = match answer {
                    Ok(Response::Blocks(b)) if b.len() == idx.len() => b,
                    Ok(_) | Err(_) => continue,
                };
                for (i, enc) in idx.into_iter().zip(blocks) {
                    match enc.map(|e| decode_verified(&ids[i], &e.0)) {
                        Some(Ok(plain)) => out[i] = Some(plain),
                        Some(Err(e)) => {
                            super::Stats::add(&self.service.stats.corrupt, 1);
                            tracing::warn!(%peer, "{e}; asking another holder")
                        }
                        None => {}
                    }
                }
            }
            attempt += 1;
        }
        Ok(out.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_target_is_within_a_directory_only_without_climbing_or_symlinks_out() {
        let base = tempfile::tempdir().unwrap();
        let allowed = base.path().join("allowed");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        assert!(within(&allowed.join("new/dir"), &allowed));
        assert!(within(&allowed, &allowed));
        assert!(!within(&outside.join("x"), &allowed));
        assert!(!within(&allowed.join("new/../../outside/x"), &allowed));
        assert!(!within(&allowed.join("../outside"), &allowed));
        assert!(
            !within(&allowed.join("link/x"), &allowed),
            "a symlink out is followed"
        );
        assert!(!within(&allowed.join("x"), &base.path().join("missing")));
    }
    use crate::store::catalog::{ArchiveKind, MemCatalog};
    use crate::store::{encode, MemBlockStore};

    fn service() -> (Arc<Service>, Arc<MemBlockStore>, Arc<MemCatalog>) {
        let (store, catalog) = (
            Arc::new(MemBlockStore::default()),
            Arc::new(MemCatalog::default()),
        );
        let (net, _rx) = mpsc::channel(1);
        let s = Service::new(
            store.clone(),
            catalog.clone(),
            BackupConfig::default(),
            (PeerId::random(), "holder".into(), "z".into()),
            net,
            (Arc::default(), Arc::default(), TakeoverSteps::default()),
            None,
        );
        (s, store, catalog)
    }

    async fn ask(s: &Arc<Service>, from: &str, request: Request) -> Response {
        ask_at(s, from, 0, request).await
    }

    /// A request from the member named `from`, stamped with `epoch`.
    async fn ask_at(s: &Arc<Service>, from: &str, epoch: u64, request: Request) -> Response {
        s.handle(Inbound {
            peer: PeerId::random(),
            peer_name: Some(from.into()),
            token: 0,
            request: protocol::encode(&(epoch, &request)),
        })
        .await
    }

    fn record(manifest: Vec<BlockId>) -> ArchiveRecord {
        ArchiveRecord {
            blade: "b1".into(),
            id: ArchiveId {
                epoch: 1,
                number: 1,
            },
            parent: None,
            kind: ArchiveKind::Snapshot,
            time_ms: 0,
            manifest,
            bytes: 0,
            files: 0,
            skipped: 0,
            blocks: 1,
            factor: 1,
            holders: Vec::new(),
            acked: Vec::new(),
        }
    }

    #[tokio::test]
    async fn only_a_blades_owner_may_push_and_a_corrupt_block_is_never_stored() {
        let (s, store, catalog) = service();
        let body = b"block body".to_vec();
        let id = BlockId::of(&body);
        let put = |b: Vec<u8>| Request::Put {
            blade: "b1".into(),
            blocks: vec![(id, protocol::Bytes(b))],
        };
        let refused = ask(&s, "mallory", put(encode(&body, false))).await;
        assert!(matches!(refused, Response::Refused(_)), "{refused:?}");
        let corrupt = ask(&s, "b1", put(encode(b"other body", false))).await;
        assert!(matches!(corrupt, Response::Refused(_)), "{corrupt:?}");
        assert!(store.list().unwrap().is_empty());
        let garbage = s
            .handle(Inbound {
                peer: PeerId::random(),
                peer_name: Some("b1".into()),
                token: 0,
                request: vec![0xFF; 64],
            })
            .await;
        assert!(matches!(garbage, Response::Refused(_)));
        assert_eq!(
            s.stats.refused.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            s.stats.corrupt.load(std::sync::atomic::Ordering::Relaxed),
            1
        );

        // A commit naming a block that is not here is refused; once it is, the record is kept.
        let manifest = crate::backup::manifest::Manifest::default();
        let mem = MemBlockStore::default();
        let manifest_ids = manifest.store(&mem, false).unwrap();
        let commit = Request::Commit {
            record: record(manifest_ids.clone()),
        };
        assert!(matches!(
            ask(&s, "b1", commit.clone()).await,
            Response::Refused(_)
        ));
        assert!(catalog.all().unwrap().is_empty());
        let blocks = manifest_ids
            .iter()
            .map(|id| (*id, protocol::Bytes(mem.get(id).unwrap().unwrap())))
            .collect();
        let stored = ask(
            &s,
            "b1",
            Request::Put {
                blade: "b1".into(),
                blocks,
            },
        )
        .await;
        assert!(matches!(stored, Response::Done), "{stored:?}");
        assert!(matches!(
            ask(&s, "mallory", commit.clone()).await,
            Response::Refused(_)
        ));
        assert!(matches!(ask(&s, "b1", commit).await, Response::Done));
        assert_eq!(catalog.list("b1").unwrap().len(), 1);

        // An archive the owner does not list but did not age out either (one it never saw) stays,
        // and is said to be here, for the owner to take in.
        let sync = |forget| Request::Sync {
            blade: "b1".into(),
            keep: vec![],
            forget,
        };
        let held = ask(&s, "b1", sync(Forget::MadeBefore(0))).await;
        assert!(matches!(held, Response::Held(h) if h.len() == 1));
        assert_eq!(catalog.list("b1").unwrap().len(), 1);
        // What the owner's aging removed, the holder forgets.
        let held = ask(&s, "b1", sync(Forget::MadeBefore(1))).await;
        assert!(matches!(held, Response::Held(h) if h.is_empty()));
        assert!(catalog.list("b1").unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_replaced_owner_stamped_with_a_stale_epoch_may_not_push() {
        let (s, store, _) = service();
        // b1 was taken over by another node at epoch 3.
        s.seats.set([("b1".to_string(), (PeerId::random(), 3))]);
        let body = b"written by the old node".to_vec();
        let id = BlockId::of(&body);
        let put = Request::Put {
            blade: "b1".into(),
            blocks: vec![(id, protocol::Bytes(encode(&body, false)))],
        };
        for (epoch, accepted) in [(0, false), (2, false), (3, true)] {
            let answer = ask_at(&s, "b1", epoch, put.clone()).await;
            assert_eq!(
                matches!(answer, Response::Done),
                accepted,
                "{epoch}: {answer:?}"
            );
            if let Response::Refused(why) = answer {
                assert!(why.contains("higher epoch"), "{why}");
            }
        }
        let sync = Request::Sync {
            blade: "b1".into(),
            keep: vec![],
            forget: Forget::All,
        };
        assert!(matches!(
            ask_at(&s, "b1", 2, sync).await,
            Response::Refused(_)
        ));
        let stored: Vec<BlockId> = store.list().unwrap().into_iter().map(|(b, _)| b).collect();
        assert_eq!(stored, [id], "only the current epoch's push is stored");
        assert_eq!(
            s.stats.refused.load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }

    #[tokio::test]
    async fn a_node_whose_blade_is_held_elsewhere_makes_no_archive_of_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"stale copy").unwrap();
        let cfg = BackupConfig {
            root: Some(root.path().into()),
            ..BackupConfig::default()
        };
        let (net, _rx) = mpsc::channel(1);
        let catalog = Arc::new(MemCatalog::default());
        let s = Service::new(
            Arc::new(MemBlockStore::default()),
            catalog.clone(),
            cfg,
            (PeerId::random(), "b1".into(), "z".into()),
            net,
            (Arc::default(), Arc::default(), TakeoverSteps::default()),
            None,
        );
        s.seats.set([("b1".to_string(), (PeerId::random(), 2))]);
        let (code, why) = s.backup(false).await.unwrap_err();
        assert_eq!(code, "not-holder", "{why}");
        assert!(catalog.all().unwrap().is_empty());
    }
}
