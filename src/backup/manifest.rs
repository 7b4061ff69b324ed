//! The manifest: what an archive lists, itself stored as blocks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::chunk::chunks;
use crate::store::{encode, BlockId, BlockStore, StoreError};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file, with blocks.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, with its target.
    Symlink,
}

/// One path of the backed-up tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the backup root, `/`-separated, raw bytes (names need not be UTF-8).
    pub path: Vec<u8>,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Permission bits (including setuid, setgid, sticky).
    pub mode: u32,
    /// Modification time: seconds since the Unix epoch.
    pub mtime_s: i64,
    /// Modification time: nanoseconds.
    pub mtime_ns: u32,
    /// Bytes (files only).
    pub size: u64,
    /// The link target (symlinks only).
    pub target: Option<Vec<u8>>,
    /// The content's blocks in order (files only).
    pub blocks: Vec<BlockId>,
}

impl Entry {
    /// Same metadata as `other`: a delta does not reread a file whose size, time, mode and kind
    /// are unchanged.
    pub fn unchanged(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mode == other.mode
            && self.mtime_s == other.mtime_s
            && self.mtime_ns == other.mtime_ns
            && self.target == other.target
    }
}

/// An archive's listing: every entry of a snapshot, or what a delta changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Entries, in path order.
    pub entries: Vec<Entry>,
    /// Paths of the parent's tree that are gone (for information: restores never delete).
    pub deleted: Vec<Vec<u8>>,
}

/// The manifest cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A block is missing or corrupt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocks do not decode to a manifest.
    #[error("the manifest is malformed: {0}")]
    Malformed(String),
}

impl Manifest {
    /// Stores the manifest as blocks and returns their ids in order.
    pub fn store(
        &self,
        store: &dyn BlockStore,
        compress: bool,
    ) -> Result<Vec<BlockId>, StoreError> {
        let bytes = postcard::to_stdvec(self).map_err(|e| StoreError::Io {
            path: "manifest".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut ids = Vec::new();
        for chunk in chunks(&bytes[..]) {
            let chunk = chunk.map_err(|source| StoreError::Io {
                path: "manifest".into(),
                source,
            })?;
            if !store.touch(&chunk.id)? {
                store.put(&chunk.id, &encode(&chunk.data, compress))?;
            }
            ids.push(chunk.id);
        }
        Ok(ids)
    }

    /// Reads a manifest back from its plain blocks, in order.
    pub fn from_blocks(blocks: &[Vec<u8>]) -> Result<Manifest, ManifestError> {
        let bytes: Vec<u8> = blocks.concat();
        postcard::from_bytes(&bytes).map_err(|e| ManifestError::Malformed(e.to_string()))
    }

    /// Every block the archive needs, manifest blocks excluded.
    pub fn block_ids(&self) -> impl Iterator<Item = &BlockId> {
        self.entries.iter().flat_map(|e| e.blocks.iter())
    }
}

/// The tree as a sequence of archives leaves it: later entries replace earlier ones by path, and
/// a path a delta lists as deleted is gone.
pub fn fold<'m>(manifests: impl IntoIterator<Item = &'m Manifest>) -> BTreeMap<Vec<u8>, Entry> {
    let mut tree = BTreeMap::new();
    for m in manifests {
        for d in &m.deleted {
            tree.remove(d);
        }
        for e in &m.entries {
            tree.insert(e.path.clone(), e.clone());
        }
    }
    tree
}
