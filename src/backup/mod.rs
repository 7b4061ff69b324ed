//! Backups of a blade's data set: scanning into blocks, archives (snapshot or delta), and restore.
//!
//! An archive is made entirely in the local store first: blocks, then the manifest (itself blocks),
//! then its record in the catalog, in that order, so a crash at any point leaves no record that
//! names a missing block. Pushing to holders is the replication layer's job.

pub mod manifest;
pub mod restore;
pub mod scan;

use std::collections::{BTreeMap, HashSet};

use manifest::{fold, Entry, Manifest, ManifestError};
use restore::BlockSource;
use scan::{ScanError, ScanSettings, ScanStats};

use dci_proto::archive::ArchiveId;

use crate::store::catalog::{ArchiveKind, ArchiveRecord, Catalog};
use crate::store::{decode_verified, BlockId, BlockStore, StoreError};

/// Every archive a snapshot, or deltas after a first snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The whole tree each time (still shipping only blocks the holders lack).
    Snapshot,
    /// Only what changed since the previous archive.
    Delta,
}

/// Why a backup failed. No archive record exists for it.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading the tree or writing blocks failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The store or catalog failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A previous archive's manifest cannot be read.
    #[error("previous archive unreadable: {0}")]
    Manifest(#[from] ManifestError),
}

/// Reads blocks from a local store, checking each.
pub struct LocalSource<'a>(pub &'a dyn BlockStore);

impl BlockSource for LocalSource<'_> {
    fn fetch(&self, ids: &[BlockId]) -> Result<Vec<Vec<u8>>, String> {
        ids.iter()
            .map(|id| match self.0.get(id) {
                Ok(Some(enc)) => decode_verified(id, &enc).map_err(|e| e.to_string()),
                Ok(None) => Err(format!("block {id:?} is missing")),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    }
}

/// Reads an archive's manifest.
pub fn load_manifest(
    record: &ArchiveRecord,
    source: &dyn BlockSource,
) -> Result<Manifest, ManifestError> {
    let blocks = source
        .fetch(&record.manifest)
        .map_err(|e| ManifestError::Malformed(format!("manifest of archive {}: {e}", record.id)))?;
    Manifest::from_blocks(&blocks)
}

/// The archives to apply, in order, to restore up to and including `upto`: its line of parents
/// back to a snapshot (or to the oldest one still kept). Only its own line: a takeover that could
/// not see the latest archives starts a line of its own from the one it saw, and the archives it
/// missed belong to none of its archives' trees. `records` are one blade's, from any nodes.
pub fn chain(records: &[ArchiveRecord], upto: ArchiveId) -> Vec<&ArchiveRecord> {
    let by_id: BTreeMap<ArchiveId, &ArchiveRecord> = records.iter().map(|r| (r.id, r)).collect();
    let mut line = Vec::new();
    let mut next = by_id.get(&upto).copied();
    while let Some(r) = next {
        line.push(r);
        next = match (r.kind, r.parent) {
            // A parent always sorts before its child, so this walk ends.
            (ArchiveKind::Delta, Some(p)) if p < r.id => by_id.get(&p).copied(),
            _ => None,
        };
    }
    line.reverse();
    line
}

/// The tree the archives up to `upto` leave, by path.
pub fn tree_at(
    records: &[ArchiveRecord],
    upto: ArchiveId,
    source: &dyn BlockSource,
) -> Result<BTreeMap<Vec<u8>, Entry>, ManifestError> {
    let manifests = chain(records, upto)
        .into_iter()
        .map(|r| load_manifest(r, source))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(fold(&manifests))
}

/// Every block an archive needs: its manifest's and its files'.
pub fn archive_blocks(
    record: &ArchiveRecord,
    source: &dyn BlockSource,
) -> Result<HashSet<BlockId>, ManifestError> {
    let m = load_manifest(record, source)?;
    let mut ids: HashSet<BlockId> = m.block_ids().copied().collect();
    ids.extend(record.manifest.iter().copied());
    Ok(ids)
}

/// Makes the next archive of `blade` in the local store and catalog, numbered under `epoch` (the
/// blade's seat epoch here), and returns its record (with no holders yet) and the scan's figures.
/// A delta records the changes since the latest archive made under the same epoch; the first under
/// a new epoch is a snapshot.
pub fn make_archive(
    settings: &ScanSettings,
    method: Method,
    store: &dyn BlockStore,
    catalog: &dyn Catalog,
    blade: &str,
    epoch: u64,
    now_ms: u64,
) -> Result<(ArchiveRecord, ScanStats), BackupError> {
    let records = catalog.list(blade)?;
    let last = records.last();
    let (parent_id, parent) = match (method, last) {
        // A delta goes on from this epoch's own line. The first archive under a new epoch (a
        // takeover) is a snapshot: the data set came from whichever archive the takeover
        // restored, and the catalog may since have taken in one it missed; a delta on that one
        // would record its extra files as deleted, which restores never delete. Its blocks are
        // on the holders already, so the snapshot costs a manifest.
        (Method::Delta, Some(last)) if last.id.epoch == epoch => (
            Some(last.id),
            Some(tree_at(&records, last.id, &LocalSource(store))?),
        ),
        _ => (None, None),
    };
    let (manifest, stats) = scan::scan(settings, store, parent.as_ref())?;
    let manifest_ids = manifest.store(store, settings.compress)?;
    let mut distinct: HashSet<BlockId> = manifest.block_ids().copied().collect();
    distinct.extend(manifest_ids.iter().copied());
    let record = ArchiveRecord {
        blade: blade.into(),
        id: ArchiveId {
            epoch,
            number: records
                .iter()
                .map(|r| r.id.number)
                .max()
                .unwrap_or(0)
                .saturating_add(1),
        },
        parent: parent_id,
        kind: if parent_id.is_some() {
            ArchiveKind::Delta
        } else {
            ArchiveKind::Snapshot
        },
        time_ms: now_ms,
        manifest: manifest_ids,
        bytes: manifest.entries.iter().map(|e| e.size).sum(),
        files: manifest.entries.len() as u64,
        skipped: stats.skipped,
        blocks: distinct.len() as u64,
        factor: 0,
        holders: Vec::new(),
        acked: Vec::new(),
    };
    catalog.put(&record)?;
    Ok((record, stats))
}

#[cfg(test)]
mod tests;
