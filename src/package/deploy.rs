//! Deploy over the mesh: `dcish deploy`, `undeploy` and `packages` on the origin agent, and the
//! package calls of the block protocol on each target.
//!
//! The origin chunks the package file into blocks (as a backup chunks a file: content-defined,
//! BLAKE3-named, so a package already stored costs nothing again), stores them, and sends each
//! target one [`Call::Install`] naming the blocks and the targets (the same list for all). A
//! target takes what its own store has; the rest is split into shares, batch k being the share of
//! target k mod n: a target takes its own share from the origin (after asking one other target
//! once, which may have it already) and every other share from its owner, asking again while the
//! owner makes progress and falling back to the origin when it does not. So the origin sends each
//! block about once whatever the number of targets. Every block is checked against its id and
//! stored, so that the targets asking this one find it. The file is reassembled, checked against its
//! size and hash, and installed; the answer is the blade's report.
//!
//! On-demand retrieval (`[packages] on_demand`): when an envelope arrives for a peerlet type not
//! installed here, the router asks [`retrieve`]: every live peer is asked whether it has an
//! installed package providing that type ([`Call::Find`]); the first that has stores its kept
//! package file as blocks and answers their list, and this node fetches, verifies (against the
//! trusted keys, narrowed by `on_demand_signers`) and installs it as a deploy would.

use std::sync::Arc;
use std::time::Duration;

use dci_proto::package::{
    installed_to_payload, reports_to_payload, InstalledInfo, PackageRequest, Report,
};
use dci_proto::Payload;
use futures::StreamExt;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::format::{Package, MAX_PACKAGE_BYTES};
use super::install::Installer;
use crate::replication::protocol::{Request, Response, MAX_PUT_BLOCKS};
use crate::replication::service::Service;
use crate::store::chunk::{self, MIN_CHUNK};
use crate::store::{decode_verified, encode, BlockId};

/// The most blocks a package can be made of.
const MAX_BLOCKS: usize = (MAX_PACKAGE_BYTES as usize) / MIN_CHUNK + 1;
/// The most peers named as sources.
const MAX_SOURCES: usize = 1024;
/// Batches of blocks fetched at once by one target.
const FETCH_PARALLEL: usize = 8;

/// A package as the mesh moves it: its blocks in order, the file's size and hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageRef {
    /// `name version`, for reports before the file is here.
    pub label: String,
    /// BLAKE3 of the whole file.
    pub id: [u8; 32],
    /// Its size.
    pub size: u64,
    /// Its blocks, in order.
    pub blocks: Vec<BlockId>,
}

/// A package call between agents (inside the block protocol).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    /// Fetch this package's blocks (from `sources`, peer ids, and the caller) and install it.
    Install {
        /// The package.
        package: PackageRef,
        /// Peers that have, or will soon have, its blocks.
        sources: Vec<String>,
    },
    /// Remove the package of this name.
    Remove {
        /// Its name.
        name: String,
    },
    /// What is installed here.
    List,
    /// Whether an installed package here provides peerlet type `app`; answered with its blocks.
    Find {
        /// The app type.
        app: String,
    },
}

/// One installed package, on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// What it provides.
    pub provides: Vec<String>,
    /// Signer fingerprint.
    pub signer: String,
    /// When installed (Unix milliseconds).
    pub time_ms: u64,
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// What an install or removal did: status, package label, failing step, output.
    Report(String, String, Option<String>, String),
    /// What is installed.
    Listing(Vec<Row>),
    /// To `Find`: the package providing the type, stored as blocks here, if any.
    Found(Option<PackageRef>),
}

type ControlFailure = (String, String);

fn fail(code: &str, msg: impl std::fmt::Display) -> ControlFailure {
    (code.into(), crate::config::one_line(&msg.to_string()))
}

fn failed(blade: &str, package: &str, why: impl std::fmt::Display) -> Report {
    Report {
        blade: blade.into(),
        status: "failed".into(),
        package: package.into(),
        step: None,
        output: why.to_string(),
    }
}

/// An operator's package command, on the agent it was given to.
pub async fn control(
    service: &Arc<Service>,
    request: PackageRequest,
) -> Result<Payload, ControlFailure> {
    let installer = service
        .packages()
        .ok_or_else(|| fail("no-packages", "this agent has no package installer"))?;
    match request {
        PackageRequest::Deploy { path, blades } => {
            let len = tokio::fs::metadata(&path)
                .await
                .map_err(|e| fail("bad-package", format!("{path}: {e}")))?
                .len();
            if len > MAX_PACKAGE_BYTES {
                return Err(fail(
                    "bad-package",
                    format!("{path} is larger than {MAX_PACKAGE_BYTES} bytes"),
                ));
            }
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| fail("bad-package", format!("{path}: {e}")))?;
            let label = Package::parse(bytes.clone())
                .map_err(|e| fail("bad-package", e))?
                .label();
            let package = store_blocks(service, bytes.clone(), label).await?;
            let install = |sources| Call::Install {
                package: package.clone(),
                sources,
            };
            let reports = fan_out(service, &blades, install, &installer, Some(&bytes)).await;
            Ok(reports_to_payload(&reports))
        }
        PackageRequest::Undeploy { name, blades } => {
            let reports = fan_out(
                service,
                &blades,
                |_| Call::Remove { name: name.clone() },
                &installer,
                None,
            )
            .await;
            Ok(reports_to_payload(&reports))
        }
        PackageRequest::List { blades } => {
            let (mut rows, mut errors) = (Vec::new(), Vec::new());
            let peers = peers_of(service, &blades).await;
            let answers = futures::future::join_all(
                blades
                    .iter()
                    .zip(&peers)
                    .map(|(b, p)| ask(service, b, *p, Call::List, &installer, None)),
            )
            .await;
            for (blade, answer) in blades.iter().zip(answers) {
                match answer {
                    Ok(Answer::Listing(list)) => {
                        rows.extend(list.into_iter().map(|r| InstalledInfo {
                            blade: blade.clone(),
                            name: r.name,
                            version: r.version,
                            provides: r.provides,
                            signer: r.signer,
                            time_ms: r.time_ms,
                        }))
                    }
                    Ok(Answer::Report(..) | Answer::Found(_)) => {
                        errors.push((blade.clone(), "bad answer".into()))
                    }
                    Err(e) => errors.push((blade.clone(), e)),
                }
            }
            Ok(installed_to_payload(&rows, &errors))
        }
    }
}

/// Chunks the file into the block store; answers its reference.
async fn store_blocks(
    service: &Arc<Service>,
    bytes: Vec<u8>,
    label: String,
) -> Result<PackageRef, ControlFailure> {
    let store = service.store();
    tokio::task::spawn_blocking(move || {
        let id = *blake3::hash(&bytes).as_bytes();
        let mut blocks = Vec::new();
        let mut batch = Vec::new();
        for c in chunk::chunks(&bytes[..]) {
            let c = c.map_err(|e| fail("store", e))?;
            blocks.push(c.id);
            batch.push((c.id, encode(&c.data, true)));
            if batch.len() == 64 {
                store.put_many(&batch).map_err(|e| fail("store", e))?;
                batch.clear();
            }
        }
        store.put_many(&batch).map_err(|e| fail("store", e))?;
        Ok(PackageRef {
            label,
            id,
            size: bytes.len() as u64,
            blocks,
        })
    })
    .await
    .map_err(|e| fail("internal", e))?
}

/// Each blade's node, unless the member table holds it dead or gone (a suspect is still asked:
/// a busy node is often only slow to answer probes).
async fn peers_of(service: &Arc<Service>, blades: &[String]) -> Vec<Option<PeerId>> {
    let members = service.members().await;
    blades
        .iter()
        .map(|blade| {
            members
                .iter()
                .find(|m| &m.name == blade && reachable(&m.state))
                .and_then(|m| m.id.parse::<PeerId>().ok())
        })
        .collect()
}

fn reachable(state: &str) -> bool {
    !matches!(state, "dead" | "left")
}

/// Sends `call` (made with the targets as sources) to every blade at once;
/// answers one report per blade, in order.
async fn fan_out(
    service: &Arc<Service>,
    blades: &[String],
    call: impl Fn(Vec<String>) -> Call,
    installer: &Arc<Installer>,
    local_bytes: Option<&Vec<u8>>,
) -> Vec<Report> {
    let targets = peers_of(service, blades).await;
    // Every target gets the same list, so that all agree on whose share each block is.
    let sources: Vec<String> = targets.iter().flatten().map(PeerId::to_string).collect();
    let asks = blades.iter().zip(&targets).map(|(blade, peer)| {
        let c = call(sources.clone());
        let package = match &c {
            Call::Install { package, .. } => package.label.clone(),
            Call::Remove { name } => name.clone(),
            Call::List | Call::Find { .. } => String::new(),
        };
        async move {
            match ask(service, blade, *peer, c, installer, local_bytes).await {
                Ok(Answer::Report(status, package, step, output)) => Report {
                    blade: blade.clone(),
                    status,
                    package,
                    step,
                    output,
                },
                Ok(Answer::Listing(_) | Answer::Found(_)) => failed(blade, &package, "bad answer"),
                Err(e) => failed(blade, &package, e),
            }
        }
    });
    futures::future::join_all(asks).await
}

/// Runs `call` on `blade`: here, or on its node (`peer`) through the block protocol.
async fn ask(
    service: &Arc<Service>,
    blade: &str,
    peer: Option<PeerId>,
    call: Call,
    installer: &Arc<Installer>,
    local_bytes: Option<&Vec<u8>>,
) -> Result<Answer, String> {
    if blade == service.name() {
        return Ok(match (call, local_bytes) {
            (Call::Install { package, .. }, Some(bytes)) => {
                install_answer(installer, bytes.clone(), &package.label).await
            }
            (call, _) => local(installer, call).await,
        });
    }
    let peer = peer.ok_or_else(|| format!("unreachable: no node holds {blade}, or it is dead"))?;
    match service.call(peer, &Request::Package(call)).await {
        Ok(Response::Package(answer)) => Ok(answer),
        Ok(other) => Err(format!("bad answer: {other:?}")),
        Err(e) => Err(format!("unreachable: {e}")),
    }
}

async fn install_answer(installer: &Installer, bytes: Vec<u8>, label: &str) -> Answer {
    match installer.install(bytes, &[]).await {
        Ok(outcome) => Answer::Report(outcome.status().into(), label.into(), None, String::new()),
        Err(f) => Answer::Report("failed".into(), label.into(), f.step, f.output),
    }
}

/// A call that needs no blocks, run here.
async fn local(installer: &Installer, call: Call) -> Answer {
    match call {
        Call::Remove { name } => match installer.uninstall(&name).await {
            Ok(true) => Answer::Report("removed".into(), name, None, String::new()),
            Ok(false) => Answer::Report("not-installed".into(), name, None, String::new()),
            Err(f) => Answer::Report("failed".into(), name, f.step, f.output),
        },
        Call::List => Answer::Listing(
            installer
                .list()
                .into_iter()
                .map(|r| Row {
                    name: r.name,
                    version: r.version,
                    provides: r.provides,
                    signer: r.signer,
                    time_ms: r.time_ms,
                })
                .collect(),
        ),
        Call::Install { package, .. } => Answer::Report(
            "failed".into(),
            package.label,
            None,
            "no package bytes".into(),
        ),
        Call::Find { .. } => Answer::Found(None),
    }
}

/// A package call from `peer`, on its target.
pub async fn handle(service: &Arc<Service>, peer: PeerId, call: Call) -> Response {
    let Some(installer) = service.packages() else {
        return Response::Refused("this agent has no package installer".into());
    };
    let answer = match call {
        Call::Install { package, sources } => {
            if package.blocks.len() > MAX_BLOCKS
                || package.size > MAX_PACKAGE_BYTES
                || sources.len() > MAX_SOURCES
            {
                return Response::Refused("package reference over the limits".into());
            }
            let label = package.label.clone();
            if installer.has(&package.id) {
                return Response::Package(Answer::Report(
                    "already-installed".into(),
                    label,
                    None,
                    String::new(),
                ));
            }
            match fetch(service, peer, &package, &sources).await {
                Ok(bytes) => install_answer(&installer, bytes, &label).await,
                Err(e) => Answer::Report("failed".into(), label, Some("fetch".into()), e),
            }
        }
        Call::Find { app } => Answer::Found(offer(service, &installer, &app).await),
        call => local(&installer, call).await,
    };
    Response::Package(answer)
}

/// The installed package providing `app`, stored as blocks for a peer to fetch.
async fn offer(service: &Arc<Service>, installer: &Installer, app: &str) -> Option<PackageRef> {
    let path = installer.provider(app)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| tracing::warn!(path = %path.display(), "kept package unreadable: {e}"))
        .ok()?;
    let label = Package::parse(bytes.clone()).ok()?.label();
    store_blocks(service, bytes, label).await.ok()
}

/// Retrieves and installs, from a peer, a package providing peerlet type `app`.
pub async fn retrieve(service: &Arc<Service>, app: &str) -> Result<(), String> {
    let installer = service
        .packages()
        .ok_or("this agent has no package installer")?;
    let me = service.local_id().to_string();
    let peers: Vec<PeerId> = service
        .members()
        .await
        .into_iter()
        .filter(|m| reachable(&m.state) && m.id != me)
        .filter_map(|m| m.id.parse().ok())
        .collect();
    let find = Request::Package(Call::Find { app: app.into() });
    let offers = futures::future::join_all(peers.iter().map(|p| service.call(*p, &find))).await;
    let mut last = format!("no peer holds a package providing peerlet:{app}");
    for (peer, offer) in peers.into_iter().zip(offers) {
        let Ok(Response::Package(Answer::Found(Some(package)))) = offer else {
            continue;
        };
        tracing::info!(%app, %peer, package = %package.label, "retrieving a package on demand");
        let result = match fetch(service, peer, &package, &[]).await {
            Ok(bytes) => installer
                .install(bytes, installer.on_demand_signers())
                .await
                .map_err(|f| {
                    format!(
                        "{} from {peer}: {}{}",
                        package.label,
                        f.step.map(|s| format!("{s}: ")).unwrap_or_default(),
                        f.output
                    )
                }),
            Err(e) => Err(format!("{} from {peer}: {e}", package.label)),
        };
        match result {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Gathers a package's blocks: this store first, then the targets and the origin (see
/// [`fetch_batch`]). `sources` is the same list of targets on every target.
async fn fetch(
    service: &Arc<Service>,
    origin: PeerId,
    package: &PackageRef,
    sources: &[String],
) -> Result<Vec<u8>, String> {
    let store = service.store();
    let me = service.local_id();
    let mut owners: Vec<PeerId> = Vec::new();
    for p in sources.iter().filter_map(|s| s.parse::<PeerId>().ok()) {
        if p != origin && !owners.contains(&p) {
            owners.push(p);
        }
    }
    let ids = package.blocks.clone();
    let mut plain: Vec<Option<Vec<u8>>> = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| {
                store
                    .get(id)
                    .ok()
                    .flatten()
                    .and_then(|enc| decode_verified(id, &enc).ok())
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())?;
    let missing: Vec<usize> = (0..plain.len()).filter(|i| plain[*i].is_none()).collect();
    // Batch k is owner k mod n's share: each target takes its share from the origin, and the
    // others' shares from their owners, so the origin sends each block about once. This
    // target's own share goes first, so that the others find it here soon.
    let others: Vec<PeerId> = owners.iter().copied().filter(|p| *p != me).collect();
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for (k, batch) in missing.chunks(MAX_PUT_BLOCKS).enumerate() {
        match owners.get(k % owners.len().max(1)) {
            Some(owner) if *owner != me => theirs.push((batch.to_vec(), Share::Of(*owner))),
            _ => {
                let helper = others.get(k % others.len().max(1)).copied();
                mine.push((batch.to_vec(), Share::Mine(helper)));
            }
        }
    }
    let fetched: Vec<Result<Fetched, String>> = futures::stream::iter(
        mine.into_iter()
            .chain(theirs)
            .map(|(batch, share)| fetch_batch(service, &package.blocks, batch, share, origin)),
    )
    .buffer_unordered(FETCH_PARALLEL)
    .collect()
    .await;
    for batch in fetched {
        for (i, data) in batch? {
            plain[i] = Some(data);
        }
    }
    let mut bytes = Vec::with_capacity(package.size as usize);
    for b in plain.into_iter().flatten() {
        bytes.extend_from_slice(&b);
    }
    if bytes.len() as u64 != package.size || *blake3::hash(&bytes).as_bytes() != package.id {
        return Err("the reassembled package does not match its size and hash".into());
    }
    Ok(bytes)
}

/// Whose share a batch of blocks is.
#[derive(Clone, Copy)]
enum Share {
    /// This target's: asked once of another target (which may have it already), then of the
    /// origin.
    Mine(Option<PeerId>),
    /// Another target's: asked of it until it has it (while it makes progress), then of the
    /// origin.
    Of(PeerId),
}

/// Blocks fetched, by their index in the package, as plain bytes.
type Fetched = Vec<(usize, Vec<u8>)>;

/// How long a target waits for another target that makes no progress on its share before it
/// asks the origin instead.
const PEER_WAIT: Duration = Duration::from_secs(10);

/// One batch of blocks, by [`Share`].
async fn fetch_batch(
    service: &Arc<Service>,
    ids: &[BlockId],
    mut wanted: Vec<usize>,
    share: Share,
    origin: PeerId,
) -> Result<Fetched, String> {
    let mut got: Fetched = Vec::new();
    match share {
        Share::Mine(Some(helper)) => {
            if let Some(still) = take(service, ids, &wanted, helper, origin, &mut got).await? {
                wanted = still;
            }
        }
        Share::Mine(None) => {}
        Share::Of(owner) => {
            let (mut idle, mut pause) = (Duration::ZERO, Duration::from_millis(50));
            while !wanted.is_empty() && idle < PEER_WAIT {
                let Some(still) = take(service, ids, &wanted, owner, origin, &mut got).await?
                else {
                    break; // unreachable: the origin it is
                };
                if still.len() < wanted.len() {
                    (idle, pause) = (Duration::ZERO, Duration::from_millis(50));
                } else {
                    tokio::time::sleep(pause).await;
                    idle += pause;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                wanted = still;
            }
        }
    }
    if !wanted.is_empty() {
        wanted = take(service, ids, &wanted, origin, origin, &mut got)
            .await?
            .unwrap_or(wanted);
    }
    if wanted.is_empty() {
        Ok(got)
    } else {
        Err(format!(
            "{} blocks are on neither the other targets nor the origin",
            wanted.len()
        ))
    }
}

/// Asks `peer` for the `wanted` blocks; each one it has is checked against its id, stored here
/// (for the targets that ask this one) and added to `got`. Answers those still wanted, or `None`
/// when the peer could not be asked.
async fn take(
    service: &Arc<Service>,
    ids: &[BlockId],
    wanted: &[usize],
    peer: PeerId,
    origin: PeerId,
    got: &mut Fetched,
) -> Result<Option<Vec<usize>>, String> {
    let request = Request::Get {
        ids: wanted.iter().map(|i| ids[*i]).collect(),
    };
    let blocks = match service.call(peer, &request).await {
        Ok(Response::Blocks(b)) if b.len() == wanted.len() => b,
        Ok(_) | Err(_) => return Ok(None),
    };
    let counter = if peer == origin {
        &service.stats().package_bytes_from_origin
    } else {
        &service.stats().package_bytes_from_peers
    };
    let (mut still, mut keep) = (Vec::new(), Vec::new());
    for (&i, enc) in wanted.iter().zip(blocks) {
        match enc.map(|e| (decode_verified(&ids[i], &e.0), e)) {
            Some((Ok(plain), enc)) => {
                crate::replication::Stats::add(counter, enc.0.len() as u64);
                keep.push((ids[i], enc.0));
                got.push((i, plain));
            }
            Some((Err(e), _)) => {
                tracing::warn!(%peer, "{e}; asking another peer");
                still.push(i);
            }
            None => still.push(i),
        }
    }
    let store = service.store();
    tokio::task::spawn_blocking(move || store.put_many(&keep))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Some(still))
}
