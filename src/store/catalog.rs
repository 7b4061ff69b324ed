//! The catalog: every archive record this node keeps, its own blade's and those it holds for others.
//!
//! A record is written only once its manifest and every block it names are stored here, so a record
//! in the catalog is always restorable from this node alone; a crash before that leaves only blocks,
//! which garbage collection removes later.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use dci_proto::archive::ArchiveId;

use super::{BlockId, StoreError};

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchiveKind {
    /// The whole tree.
    Snapshot,
    /// What changed since the previous archive.
    Delta,
}

impl ArchiveKind {
    /// The spelling in `dcish archives`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ArchiveKind::Snapshot => "snapshot",
            ArchiveKind::Delta => "delta",
        }
    }
}

/// One archive of one blade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    /// The blade it backs up.
    pub blade: String,
    /// Its id: the blade's epoch where it was made, and its number.
    pub id: ArchiveId,
    /// For a delta, the archive it records changes from (an earlier id).
    pub parent: Option<ArchiveId>,
    /// Snapshot or delta.
    pub kind: ArchiveKind,
    /// When the owner made it, ms since the Unix epoch.
    pub time_ms: u64,
    /// The manifest's blocks, in order.
    pub manifest: Vec<BlockId>,
    /// Bytes of file data it lists.
    pub bytes: u64,
    /// Entries (files, directories, symlinks) it lists.
    pub files: u64,
    /// Files skipped (unreadable or special).
    pub skipped: u64,
    /// Distinct blocks it references, manifest included.
    pub blocks: u64,
    /// The owner's replication factor when it last placed the archive.
    pub factor: u64,
    /// The holders chosen for it (peer ids), at the owner.
    pub holders: Vec<String>,
    /// The holders that acknowledged every block, at the owner.
    pub acked: Vec<String>,
}

impl ArchiveRecord {
    /// Complete: as many holders as the factor asks, and every one acknowledged all its blocks.
    pub fn complete(&self) -> bool {
        self.holders.len() as u64 >= self.factor
            && self.holders.iter().all(|h| self.acked.contains(h))
    }
}

/// Where archive records live.
pub trait Catalog: Send + Sync + 'static {
    /// Writes (or replaces) a record, durably.
    fn put(&self, record: &ArchiveRecord) -> Result<(), StoreError>;
    /// Removes a record (absent is fine).
    fn remove(&self, blade: &str, id: ArchiveId) -> Result<(), StoreError>;
    /// One blade's records, in id order (a parent before its children).
    fn list(&self, blade: &str) -> Result<Vec<ArchiveRecord>, StoreError>;
    /// Every record, of every blade.
    fn all(&self) -> Result<Vec<ArchiveRecord>, StoreError>;
}

fn key(blade: &str, id: ArchiveId) -> Vec<u8> {
    let mut k = blade.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&id.epoch.to_be_bytes());
    k.extend_from_slice(&id.number.to_be_bytes());
    k
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: "catalog".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The catalog in a sled tree, keyed by blade then archive id.
pub struct SledCatalog {
    tree: sled::Tree,
}

impl SledCatalog {
    /// Opens the `archives` tree of `db`.
    pub fn open(db: &sled::Db) -> Result<SledCatalog, StoreError> {
        Ok(SledCatalog {
            tree: db.open_tree("archives").map_err(db_err)?,
        })
    }

    fn decode(v: &[u8]) -> Option<ArchiveRecord> {
        postcard::from_bytes(v).ok()
    }
}

impl Catalog for SledCatalog {
    fn put(&self, record: &ArchiveRecord) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(record).map_err(db_err)?;
        self.tree
            .insert(key(&record.blade, record.id), bytes)
            .map_err(db_err)?;
        self.tree.flush().map_err(db_err)?;
        Ok(())
    }
    fn remove(&self, blade: &str, id: ArchiveId) -> Result<(), StoreError> {
        self.tree.remove(key(blade, id)).map_err(db_err)?;
        self.tree.flush().map_err(db_err)?;
        Ok(())
    }
    fn list(&self, blade: &str) -> Result<Vec<ArchiveRecord>, StoreError> {
        let mut prefix = blade.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (_, v) = kv.map_err(db_err)?;
            out.extend(Self::decode(&v));
        }
        Ok(out)
    }
    fn all(&self) -> Result<Vec<ArchiveRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (_, v) = kv.map_err(db_err)?;
            out.extend(Self::decode(&v));
        }
        Ok(out)
    }
}

/// The catalog in memory, for tests.
#[derive(Default)]
pub struct MemCatalog {
    records: Mutex<BTreeMap<Vec<u8>, ArchiveRecord>>,
}

impl MemCatalog {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, ArchiveRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Catalog for MemCatalog {
    fn put(&self, record: &ArchiveRecord) -> Result<(), StoreError> {
        self.map()
            .insert(key(&record.blade, record.id), record.clone());
        Ok(())
    }
    fn remove(&self, blade: &str, id: ArchiveId) -> Result<(), StoreError> {
        self.map().remove(&key(blade, id));
        Ok(())
    }
    fn list(&self, blade: &str) -> Result<Vec<ArchiveRecord>, StoreError> {
        Ok(self
            .map()
            .values()
            .filter(|r| r.blade == blade)
            .cloned()
            .collect())
    }
    fn all(&self) -> Result<Vec<ArchiveRecord>, StoreError> {
        Ok(self.map().values().cloned().collect())
    }
}
