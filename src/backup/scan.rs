//! Reading the backup root into blocks and a manifest, one file at a time, one chunk at a time.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::manifest::{Entry, EntryKind, Manifest};
use crate::store::chunk::chunks;
use crate::store::{encode, BlockStore, StoreError};

/// What to read and how.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// The backup root.
    pub root: PathBuf,
    /// Directory names (or relative paths) never descended into.
    pub exclude_dirs: Vec<String>,
    /// File extensions (without the dot) never read.
    pub exclude_exts: Vec<String>,
    /// Compress blocks with zstd.
    pub compress: bool,
}

/// Figures of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Entries listed.
    pub files: u64,
    /// File bytes listed.
    pub bytes: u64,
    /// Files read and chunked (a delta skips unchanged ones).
    pub read: u64,
    /// Blocks newly written to the store.
    pub new_blocks: u64,
    /// Bytes of newly written blocks, encoded.
    pub new_bytes: u64,
    /// Unreadable or special files skipped.
    pub skipped: u64,
}

/// Why a scan stopped. Blocks written before the error stay (collected later); no archive exists.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root cannot be read at all.
    #[error("backup root {0}: {1}")]
    Root(PathBuf, std::io::Error),
    /// The store refused a block (e.g. a full disk).
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Scanner<'a> {
    settings: &'a ScanSettings,
    store: &'a dyn BlockStore,
    parent: Option<&'a BTreeMap<Vec<u8>, Entry>>,
    seen: HashSet<Vec<u8>>,
    manifest: Manifest,
    stats: ScanStats,
    /// New blocks not yet written: the store makes a batch durable at once.
    pending: Vec<(crate::store::BlockId, Vec<u8>)>,
    pending_ids: HashSet<crate::store::BlockId>,
    pending_bytes: usize,
}

/// New blocks are written in batches of about this many bytes.
const BATCH_BYTES: usize = 8 << 20;

/// Scans the root. With `parent` (the tree the previous archives leave), the manifest lists only
/// what changed, and unchanged files are not even read: a delta.
pub fn scan(
    settings: &ScanSettings,
    store: &dyn BlockStore,
    parent: Option<&BTreeMap<Vec<u8>, Entry>>,
) -> Result<(Manifest, ScanStats), ScanError> {
    let root_meta =
        fs::metadata(&settings.root).map_err(|e| ScanError::Root(settings.root.clone(), e))?;
    if !root_meta.is_dir() {
        return Err(ScanError::Root(
            settings.root.clone(),
            std::io::Error::other("not a directory"),
        ));
    }
    let mut s = Scanner {
        settings,
        store,
        parent,
        seen: HashSet::new(),
        manifest: Manifest::default(),
        stats: ScanStats::default(),
        pending: Vec::new(),
        pending_ids: HashSet::new(),
        pending_bytes: 0,
    };
    s.dir(&settings.root, &[]).map_err(|e| match e {
        DirError::Store(e) => ScanError::Store(e),
        DirError::Io(e) => ScanError::Root(settings.root.clone(), e),
    })?;
    s.flush()?;
    if let Some(parent) = parent {
        s.manifest.deleted = parent
            .keys()
            .filter(|p| !s.seen.contains(*p))
            .cloned()
            .collect();
    }
    Ok((s.manifest, s.stats))
}

enum DirError {
    Store(StoreError),
    Io(std::io::Error),
}

impl From<StoreError> for DirError {
    fn from(e: StoreError) -> Self {
        DirError::Store(e)
    }
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

impl Scanner<'_> {
    fn excluded_dir(&self, rel: &[u8], name: &[u8]) -> bool {
        self.settings
            .exclude_dirs
            .iter()
            .any(|d| d.as_bytes() == name || d.as_bytes() == rel)
    }

    fn excluded_file(&self, name: &[u8]) -> bool {
        let Some(dot) = name.iter().rposition(|b| *b == b'.') else {
            return false;
        };
        let ext = &name[dot + 1..];
        self.settings
            .exclude_exts
            .iter()
            .any(|x| x.trim_start_matches('.').as_bytes() == ext)
    }

    fn skip(&mut self, path: &Path, why: &str) {
        tracing::warn!(path = %path.display(), "backup skips it: {why}");
        self.stats.skipped += 1;
    }

    fn dir(&mut self, dir: &Path, rel: &[u8]) -> Result<(), DirError> {
        let mut names: Vec<_> = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
            Err(e) if rel.is_empty() => return Err(DirError::Io(e)),
            Err(e) => {
                self.skip(dir, &e.to_string());
                return Ok(());
            }
        };
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = join(rel, name.as_bytes());
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.skip(&path, &e.to_string());
                    continue;
                }
            };
            let ft = meta.file_type();
            let mut entry = Entry {
                path: rel.clone(),
                kind: EntryKind::Dir,
                mode: meta.mode() & 0o7777,
                mtime_s: meta.mtime(),
                mtime_ns: meta.mtime_nsec() as u32,
                size: 0,
                target: None,
                blocks: Vec::new(),
            };
            if ft.is_dir() {
                if self.excluded_dir(&rel, name.as_bytes()) {
                    continue;
                }
                self.add(entry);
                self.dir(&path, &rel)?;
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(t) => {
                        entry.kind = EntryKind::Symlink;
                        entry.target = Some(t.as_os_str().as_bytes().to_vec());
                        self.add(entry);
                    }
                    Err(e) => self.skip(&path, &e.to_string()),
                }
            } else if ft.is_file() {
                if self.excluded_file(name.as_bytes()) {
                    continue;
                }
                entry.kind = EntryKind::File;
                entry.size = meta.len();
                self.file(&path, entry)?;
            } else {
                let what = if ft.is_fifo() {
                    "a FIFO"
                } else if ft.is_socket() {
                    "a socket"
                } else {
                    "a device"
                };
                self.skip(&path, &format!("{what} is not backed up"));
            }
        }
        Ok(())
    }

    /// Writes the pending blocks, durably.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.store.put_many(&self.pending)?;
        self.pending.clear();
        self.pending_ids.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Records an entry: always in a snapshot, only when changed in a delta.
    fn add(&mut self, entry: Entry) {
        self.seen.insert(entry.path.clone());
        self.stats.files += 1;
        self.stats.bytes += entry.size;
        let unchanged = self
            .parent
            .and_then(|p| p.get(&entry.path))
            .is_some_and(|old| old.unchanged(&entry));
        if !unchanged {
            self.manifest.entries.push(entry);
        }
    }

    fn file(&mut self, path: &Path, mut entry: Entry) -> Result<(), DirError> {
        if let Some(old) = self.parent.and_then(|p| p.get(&entry.path)) {
            if old.unchanged(&entry) {
                self.add(entry);
                return Ok(());
            }
        }
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.skip(path, &e.to_string());
                return Ok(());
            }
        };
        let mut size = 0u64;
        for chunk in chunks(f) {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    // Blocks already written stay for garbage collection; the entry is dropped.
                    self.skip(path, &e.to_string());
                    return Ok(());
                }
            };
            size += chunk.data.len() as u64;
            if !self.pending_ids.contains(&chunk.id) && !self.store.touch(&chunk.id)? {
                let enc = encode(&chunk.data, self.settings.compress);
                self.stats.new_blocks += 1;
                self.stats.new_bytes += enc.len() as u64;
                self.pending_bytes += enc.len();
                self.pending_ids.insert(chunk.id);
                self.pending.push((chunk.id, enc));
                if self.pending_bytes >= BATCH_BYTES {
                    self.flush()?;
                }
            }
            entry.blocks.push(chunk.id);
        }
        // The file may have changed while it was read; the manifest says what was read.
        entry.size = size;
        self.stats.read += 1;
        self.add(entry);
        Ok(())
    }
}
