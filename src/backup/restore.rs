//! Writing archives back into a directory (the seeds' Figures 13 and 14).
//!
//! Sequential restore applies archives in order: a file whose name clashes is overwritten, a new
//! one is created, and nothing the archives do not mention is touched or deleted. Every path is
//! checked before anything is written: no absolute path, no `..`, and no write through a symlink
//! already in the target, so an archive can never write outside the target directory.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globset::GlobSet;

use super::manifest::{Entry, EntryKind, Manifest};
use crate::store::BlockId;

/// How many blocks are asked for at once while a file is written: the fetch parallelism, and the
/// bound on memory.
pub const FETCH_WINDOW: usize = 64;

/// Windows of blocks fetched ahead of the file being written.
const PREFETCH_WINDOWS: usize = 4;

/// Where a restore gets plain, verified blocks from. Shared with the thread that fetches ahead.
pub trait BlockSource: Sync {
    /// The blocks, in the order asked; each checked against its id.
    fn fetch(&self, ids: &[BlockId]) -> Result<Vec<Vec<u8>>, String>;
}

/// Figures of one restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Files, directories and symlinks written.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Entries refused (unsafe path, or a directory where a file goes).
    pub refused: u64,
}

/// Why a restore stopped; what was written before stays.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target cannot be written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A block could not be had from any holder.
    #[error("cannot fetch blocks: {0}")]
    Fetch(String),
}

/// The checked components of an archived path; `None` if it could escape the target.
pub fn safe_components(path: &[u8]) -> Option<Vec<&OsStr>> {
    if path.is_empty() || path.starts_with(b"/") {
        return None;
    }
    let parts: Vec<&OsStr> = path.split(|b| *b == b'/').map(OsStr::from_bytes).collect();
    let ok = parts.iter().all(|p| {
        let b = p.as_bytes();
        !b.is_empty() && b != b"." && b != b".." && !b.contains(&0)
    });
    ok.then_some(parts)
}

/// Whether `entry` is selected by the globs (all entries without globs). A directory is also
/// selected when something under it is, so that partial restores recreate parents.
fn selected(globs: Option<&GlobSet>, path: &[u8]) -> bool {
    match globs {
        None => true,
        Some(g) => g.is_match(Path::new(OsStr::from_bytes(path))),
    }
}

/// Restores one archive after another into `target`.
pub struct Restorer<'a> {
    target: PathBuf,
    globs: Option<&'a GlobSet>,
    source: &'a dyn BlockSource,
    /// Directory modes and times are set last, so a read-only directory does not block its files.
    dirs: Vec<(PathBuf, u32, SystemTime)>,
    /// Figures so far.
    pub stats: RestoreStats,
}

/// The windows of blocks the fetching thread has ready, in the order of the files.
struct Ahead(std::sync::mpsc::Receiver<Result<Vec<Vec<u8>>, String>>);

impl Ahead {
    fn next(&self) -> Result<Vec<Vec<u8>>, RestoreError> {
        match self.0.recv() {
            Ok(window) => window.map_err(RestoreError::Fetch),
            Err(_) => Err(RestoreError::Fetch("the fetching thread stopped".into())),
        }
    }

    /// Drops a refused file's windows, fetched or not.
    fn skip(&self, entry: &Entry) {
        if entry.kind == EntryKind::File {
            for _ in entry.blocks.chunks(FETCH_WINDOW) {
                let _ = self.0.recv();
            }
        }
    }
}

fn mtime(e: &Entry) -> SystemTime {
    if e.mtime_s >= 0 {
        UNIX_EPOCH + Duration::new(e.mtime_s as u64, e.mtime_ns.min(999_999_999))
    } else {
        UNIX_EPOCH
    }
}

impl<'a> Restorer<'a> {
    /// A restorer into `target` (created if missing), of the entries `globs` select.
    pub fn new(
        target: &Path,
        globs: Option<&'a GlobSet>,
        source: &'a dyn BlockSource,
    ) -> Result<Restorer<'a>, RestoreError> {
        fs::create_dir_all(target).map_err(|e| RestoreError::Io(target.into(), e))?;
        Ok(Restorer {
            target: target.into(),
            globs,
            source,
            dirs: Vec::new(),
            stats: RestoreStats::default(),
        })
    }

    /// Applies one archive's manifest. The blocks of the files ahead are fetched on a thread of
    /// their own while this one writes and syncs, so the holders' latency overlaps the disk's.
    pub fn apply(&mut self, manifest: &Manifest) -> Result<(), RestoreError> {
        let (source, globs) = (self.source, self.globs);
        // Every file that passes the path checks, in order: the writer takes their windows in
        // the same order, and drains those of a file it then refuses.
        let fetched = |e: &&Entry| {
            e.kind == EntryKind::File
                && selected(globs, &e.path)
                && safe_components(&e.path).is_some()
        };
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(PREFETCH_WINDOWS);
            let files = manifest.entries.iter().filter(fetched);
            scope.spawn(move || {
                let mut windows = files.flat_map(|e| e.blocks.chunks(FETCH_WINDOW)).peekable();
                loop {
                    // Small files' windows are asked for together, up to a window's worth of
                    // blocks: one round trip for many files instead of one each.
                    let mut group: Vec<&[BlockId]> = Vec::new();
                    let mut blocks = 0;
                    while let Some(w) =
                        windows.next_if(|w| group.is_empty() || blocks + w.len() <= FETCH_WINDOW)
                    {
                        blocks += w.len();
                        group.push(w);
                    }
                    if group.is_empty() {
                        return;
                    }
                    let fetched: Vec<Result<Vec<Vec<u8>>, String>> =
                        match source.fetch(&group.concat()) {
                            Ok(mut all) => group
                                .iter()
                                .map(|w| {
                                    let rest = all.split_off(w.len());
                                    Ok(std::mem::replace(&mut all, rest))
                                })
                                .collect(),
                            // Each window alone, so that one the writer skips fails nothing else.
                            Err(_) => group.iter().map(|w| source.fetch(w)).collect(),
                        };
                    for window in fetched {
                        // A failure goes to the writer, who fails the restore if it needs it.
                        if tx.send(window).is_err() {
                            return;
                        }
                    }
                }
            });
            let ahead = Ahead(rx);
            for entry in &manifest.entries {
                if !selected(self.globs, &entry.path) {
                    continue;
                }
                let Some(parts) = safe_components(&entry.path) else {
                    tracing::warn!(path = %String::from_utf8_lossy(&entry.path), "restore refuses a path that leaves the target");
                    self.stats.refused += 1;
                    continue;
                };
                let Some(path) = self.prepare_parents(&parts)? else {
                    self.stats.refused += 1;
                    ahead.skip(entry);
                    continue;
                };
                self.entry(entry, &path, &ahead)?;
            }
            Ok(())
        })
    }

    /// Creates the parents of an entry, refusing to go through a symlink or a file.
    fn prepare_parents(&self, parts: &[&OsStr]) -> Result<Option<PathBuf>, RestoreError> {
        let mut dir = self.target.clone();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    tracing::warn!(path = %dir.display(), "restore refuses to write through a symlink or a file");
                    return Ok(None);
                }
                Err(_) => fs::create_dir(&dir).map_err(|e| RestoreError::Io(dir.clone(), e))?,
            }
        }
        Ok(Some(dir.join(parts[parts.len() - 1])))
    }

    fn entry(&mut self, entry: &Entry, path: &Path, ahead: &Ahead) -> Result<(), RestoreError> {
        let io = |e| RestoreError::Io(path.into(), e);
        let existing = fs::symlink_metadata(path).ok();
        match entry.kind {
            EntryKind::Dir => {
                match existing {
                    Some(m) if m.is_dir() => {}
                    Some(_) => {
                        fs::remove_file(path).map_err(io)?;
                        fs::create_dir(path).map_err(io)?;
                    }
                    None => fs::create_dir(path).map_err(io)?,
                }
                self.dirs.push((path.into(), entry.mode, mtime(entry)));
            }
            EntryKind::Symlink => {
                if existing.as_ref().is_some_and(|m| m.is_dir()) {
                    self.stats.refused += 1;
                    return Ok(());
                }
                if existing.is_some() {
                    fs::remove_file(path).map_err(io)?;
                }
                let target = entry.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(target), path).map_err(io)?;
            }
            EntryKind::File => {
                if existing.as_ref().is_some_and(|m| m.is_dir()) {
                    self.stats.refused += 1;
                    ahead.skip(entry);
                    return Ok(());
                }
                self.file(entry, path, ahead)?;
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Writes a file beside its final name, then renames it over whatever was there (a symlink
    /// at that name is replaced, never followed).
    fn file(&mut self, entry: &Entry, path: &Path, ahead: &Ahead) -> Result<(), RestoreError> {
        let name = path.file_name().unwrap_or_default().as_bytes();
        let tmp = path.with_file_name(OsStr::from_bytes(
            &[b".dci-restore.", name, b".tmp"].concat(),
        ));
        let io = |e| RestoreError::Io(tmp.clone(), e);
        let _ = fs::remove_file(&tmp);
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        let written = (|| {
            for _ in entry.blocks.chunks(FETCH_WINDOW) {
                for b in ahead.next()? {
                    f.write_all(&b).map_err(io)?;
                    self.stats.bytes += b.len() as u64;
                }
            }
            f.set_permissions(Permissions::from_mode(entry.mode))
                .map_err(io)?;
            f.set_modified(mtime(entry)).map_err(io)?;
            f.sync_all().map_err(io)?;
            fs::rename(&tmp, path).map_err(|e| RestoreError::Io(path.into(), e))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Sets directory modes and times, deepest first; call after the last archive.
    pub fn finish(mut self) -> Result<RestoreStats, RestoreError> {
        // Deepest first, and the latest archive's mode for a directory listed more than once.
        self.dirs.reverse();
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        self.dirs.dedup_by(|later, first| later.0 == first.0);
        for (dir, mode, time) in &self.dirs {
            let io = |e| RestoreError::Io(dir.clone(), e);
            fs::set_permissions(dir, Permissions::from_mode(*mode)).map_err(io)?;
            if let Ok(f) = File::open(dir) {
                let _ = f.set_modified(*time);
            }
        }
        Ok(self.stats)
    }
}
