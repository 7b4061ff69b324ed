//! The block store on disk: one file per block under `<data-dir>/blocks/<2 hex>/<64 hex>`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::{BlockId, BlockStore, StoreError};

/// Blocks as files, written atomically (temporary file, fsync, rename, fsync of the directory).
pub struct FsBlockStore {
    root: PathBuf,
    /// Makes temporary names unique among concurrent writers of this process.
    seq: AtomicU64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FsBlockStore {
    /// Opens (creating) the store under `root`, and removes temporaries a crash left behind.
    pub fn open(root: &Path) -> Result<FsBlockStore, StoreError> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            let _ = fs::remove_file(&path);
        }
        Ok(FsBlockStore {
            root: root.to_path_buf(),
            seq: AtomicU64::new(0),
        })
    }

    fn path(&self, id: &BlockId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }
}

impl FsBlockStore {
    /// Flushes the whole file system the store lives on.
    fn sync_all(&self) -> Result<(), StoreError> {
        use std::os::fd::AsRawFd;
        let dir = File::open(&self.root).map_err(io(&self.root))?;
        // SAFETY: `dir` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io(&self.root)(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl BlockStore for FsBlockStore {
    fn put(&self, id: &BlockId, encoded: &[u8]) -> Result<(), StoreError> {
        let path = self.path(id);
        if self.touch(id)? {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}.{n}", id.to_hex(), std::process::id()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(encoded).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            fs::rename(&tmp, &path).map_err(io(&path))?;
            sync_dir(&dir)
        })();
        if written.is_err() {
            // A full disk leaves no partial body behind, under either name.
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Writes every body to a temporary, makes them all durable with one `syncfs`, renames them
    /// into place, and makes the renames durable with a second one: two flushes per batch instead
    /// of two per block, with the same guarantee (no name ever points at a torn body).
    fn put_many(&self, blocks: &[(BlockId, Vec<u8>)]) -> Result<(), StoreError> {
        let mut temps: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = (|| {
            for (id, encoded) in blocks {
                if self.touch(id)? || temps.iter().any(|(_, p)| *p == self.path(id)) {
                    continue;
                }
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                let tmp = self.root.join("tmp").join(format!(
                    "{}.{}.{n}",
                    id.to_hex(),
                    std::process::id()
                ));
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(io(&tmp))?;
                temps.push((tmp.clone(), self.path(id)));
                f.write_all(encoded).map_err(io(&tmp))?;
            }
            if temps.is_empty() {
                return Ok(());
            }
            self.sync_all()?;
            for (tmp, path) in &temps {
                let dir = path.parent().unwrap_or(&self.root);
                fs::create_dir_all(dir).map_err(io(dir))?;
                fs::rename(tmp, path).map_err(io(path))?;
            }
            self.sync_all()
        })();
        if result.is_err() {
            for (tmp, _) in &temps {
                let _ = fs::remove_file(tmp);
            }
        }
        result
    }

    fn get(&self, id: &BlockId) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(id);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn touch(&self, id: &BlockId) -> Result<bool, StoreError> {
        let path = self.path(id);
        match File::open(&path) {
            Ok(f) => {
                f.set_modified(SystemTime::now()).map_err(io(&path))?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn remove(&self, id: &BlockId) -> Result<(), StoreError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn list(&self) -> Result<Vec<(BlockId, SystemTime)>, StoreError> {
        let mut out = Vec::new();
        for sub in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let sub = sub.map_err(io(&self.root))?.path();
            if !sub.is_dir() || sub.ends_with("tmp") {
                continue;
            }
            for entry in fs::read_dir(&sub).map_err(io(&sub))? {
                let entry = entry.map_err(io(&sub))?;
                let Some(id) = entry.file_name().to_str().and_then(BlockId::from_hex) else {
                    continue;
                };
                let time = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((id, time));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{decode_verified, encode};

    #[test]
    fn a_stored_block_survives_reopening_and_stray_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlockStore::open(dir.path()).unwrap();
        let id = BlockId::of(b"body");
        store.put(&id, &encode(b"body", true)).unwrap();
        // A crash between create and rename leaves a temporary, never a body under an id.
        std::fs::write(dir.path().join("tmp").join("junk.1.2"), b"half").unwrap();
        drop(store);
        let store = FsBlockStore::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        let got = store.get(&id).unwrap().unwrap();
        assert_eq!(decode_verified(&id, &got).unwrap(), b"body");
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove(&id).unwrap();
        assert!(!store.touch(&id).unwrap());
        assert!(store.get(&id).unwrap().is_none());
    }

    #[test]
    fn a_batch_is_stored_whole_and_skips_blocks_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlockStore::open(dir.path()).unwrap();
        let blocks: Vec<(BlockId, Vec<u8>)> = (0..5u8)
            .map(|i| (BlockId::of(&[i]), encode(&[i], false)))
            .collect();
        store.put(&blocks[0].0, &blocks[0].1).unwrap();
        let mut twice = blocks.clone();
        twice.push(blocks[1].clone());
        store.put_many(&twice).unwrap();
        assert_eq!(store.list().unwrap().len(), 5);
        for (id, _) in &blocks {
            decode_verified(id, &store.get(id).unwrap().unwrap()).unwrap();
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
