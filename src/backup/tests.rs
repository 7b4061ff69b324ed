use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::manifest::{Entry, EntryKind, Manifest};
use super::restore::Restorer;
use super::*;
use crate::store::catalog::MemCatalog;
use crate::store::{BlockId, MemBlockStore, StoreError};

fn settings(root: &Path) -> ScanSettings {
    ScanSettings {
        root: root.into(),
        exclude_dirs: vec!["cache".into()],
        exclude_exts: vec!["tmp".into()],
        compress: true,
    }
}

/// The next archive of blade `b` of the tree at `root`, made under `epoch` at time `now`.
fn make(
    root: &Path,
    method: Method,
    store: &dyn BlockStore,
    catalog: &MemCatalog,
    epoch: u64,
    now: u64,
) -> Result<(ArchiveRecord, ScanStats), BackupError> {
    make_archive(&settings(root), method, store, catalog, "b", epoch, now)
}

fn restore_upto(
    store: &MemBlockStore,
    catalog: &MemCatalog,
    upto: u64,
    target: &Path,
    globs: Option<&globset::GlobSet>,
) -> restore::RestoreStats {
    let records = catalog.list("b").unwrap();
    restore_line(store, &records, id(1, upto), target, globs)
}

fn id(epoch: u64, number: u64) -> ArchiveId {
    ArchiveId { epoch, number }
}

fn restore_line(
    store: &MemBlockStore,
    records: &[ArchiveRecord],
    upto: ArchiveId,
    target: &Path,
    globs: Option<&globset::GlobSet>,
) -> restore::RestoreStats {
    let src = LocalSource(store);
    let mut r = Restorer::new(target, globs, &src).unwrap();
    for rec in chain(records, upto) {
        r.apply(&load_manifest(rec, &src).unwrap()).unwrap();
    }
    r.finish().unwrap()
}

#[test]
fn a_snapshot_then_a_delta_restore_the_tree_with_modes_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir_all(root.join("cache")).unwrap();
    fs::write(root.join("a/b/big"), vec![7u8; 300_000]).unwrap();
    fs::write(root.join("x.txt"), b"hello").unwrap();
    fs::write(root.join("skip.tmp"), b"no").unwrap();
    fs::write(root.join("cache/no"), b"no").unwrap();
    fs::set_permissions(root.join("x.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    symlink("a/b/big", root.join("link")).unwrap();
    let (store, catalog) = (MemBlockStore::default(), MemCatalog::default());

    let (first, _) = make(&root, Method::Delta, &store, &catalog, 1, 1).unwrap();
    assert_eq!(first.kind, ArchiveKind::Snapshot);
    assert_eq!(first.files, 5);

    fs::write(root.join("x.txt"), b"changed!").unwrap();
    fs::write(root.join("new"), b"new file").unwrap();
    let (second, stats) = make(&root, Method::Delta, &store, &catalog, 1, 2).unwrap();
    assert_eq!(second.kind, ArchiveKind::Delta);
    assert_eq!(stats.read, 2, "only the changed and the new file are read");
    assert_eq!(second.files, 2);

    let out = dir.path().join("out");
    restore_upto(&store, &catalog, 2, &out, None);
    assert_eq!(fs::read(out.join("x.txt")).unwrap(), b"changed!");
    assert_eq!(fs::read(out.join("a/b/big")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(
        fs::read_link(out.join("link")).unwrap(),
        Path::new("a/b/big")
    );
    assert_eq!(
        fs::metadata(out.join("x.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
    assert!(!out.join("skip.tmp").exists() && !out.join("cache").exists());
}

#[test]
fn sequential_restore_to_an_earlier_archive_overwrites_clashes_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("x"), b"v1").unwrap();
    let (store, catalog) = (MemBlockStore::default(), MemCatalog::default());
    make(&root, Method::Delta, &store, &catalog, 1, 1).unwrap();
    fs::write(root.join("x"), b"version 2").unwrap();
    fs::write(root.join("y"), b"y2").unwrap();
    make(&root, Method::Delta, &store, &catalog, 1, 2).unwrap();

    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("w"), b"untouched").unwrap();
    fs::write(out.join("x"), b"old local").unwrap();
    restore_upto(&store, &catalog, 1, &out, None);
    assert_eq!(fs::read(out.join("x")).unwrap(), b"v1");
    assert!(!out.join("y").exists(), "archive 2 is not applied");
    assert_eq!(fs::read(out.join("w")).unwrap(), b"untouched");
}

/// A takeover that missed an archive: the old holder, at epoch 1, made two (`x` v1; then `x` v2
/// and `y`); the node that took the blade over at epoch 2 reached only a holder of the first,
/// restored it into `new_root`, and wrote `z` there.
struct MissedTakeover {
    dir: tempfile::TempDir,
    new_root: PathBuf,
    store: MemBlockStore,
    old: MemCatalog,
    new: MemCatalog,
    missed: ArchiveRecord,
}

fn missed_takeover() -> MissedTakeover {
    let dir = tempfile::tempdir().unwrap();
    let (old_root, new_root) = (dir.path().join("old"), dir.path().join("new"));
    fs::create_dir_all(&old_root).unwrap();
    let store = MemBlockStore::default();
    let (old, new) = (MemCatalog::default(), MemCatalog::default());
    fs::write(old_root.join("x"), b"v1").unwrap();
    let (first, _) = make(&old_root, Method::Delta, &store, &old, 1, 1).unwrap();
    fs::write(old_root.join("x"), b"v2").unwrap();
    fs::write(old_root.join("y"), b"only in 1.2").unwrap();
    let (missed, _) = make(&old_root, Method::Delta, &store, &old, 1, 2).unwrap();
    new.put(&first).unwrap();
    restore_line(&store, &new.list("b").unwrap(), first.id, &new_root, None);
    fs::write(new_root.join("z"), b"after the takeover").unwrap();
    MissedTakeover {
        dir,
        new_root,
        store,
        old,
        new,
        missed,
    }
}

#[test]
fn a_takeover_that_missed_the_latest_archive_numbers_its_own_apart_and_each_restores_its_line() {
    let t = missed_takeover();
    let (own, _) = make(&t.new_root, Method::Delta, &t.store, &t.new, 2, 3).unwrap();
    assert_eq!(
        (t.missed.id, own.id),
        (id(1, 2), id(2, 2)),
        "same number, distinct ids"
    );
    // The first archive of a new epoch is a snapshot of the data set the takeover restored.
    assert_eq!((own.kind, own.parent), (ArchiveKind::Snapshot, None));

    // Once both lines meet in one catalog, each archive still restores its own tree.
    let mut all = t.old.list("b").unwrap();
    all.push(own.clone());
    all.sort_by_key(|r| r.id);
    let out = t.dir.path().join("out-own");
    restore_line(&t.store, &all, own.id, &out, None);
    assert_eq!(fs::read(out.join("x")).unwrap(), b"v1");
    assert!(out.join("z").exists() && !out.join("y").exists());
    let out = t.dir.path().join("out-missed");
    restore_line(&t.store, &all, t.missed.id, &out, None);
    assert_eq!(fs::read(out.join("x")).unwrap(), b"v2");
    assert!(out.join("y").exists() && !out.join("z").exists());
}

/// An archive the new holder takes in (its holder came back) before it makes its own first one
/// is not that archive's parent: the data set came from the archive restored at the takeover, and
/// a delta on the other would record its files as deleted, which restores never delete.
#[test]
fn an_archive_taken_in_before_the_first_of_a_new_epoch_does_not_leak_into_its_tree() {
    let t = missed_takeover();
    t.new.put(&t.missed).unwrap();
    let (own, _) = make(&t.new_root, Method::Delta, &t.store, &t.new, 2, 3).unwrap();
    let out = t.dir.path().join("out");
    restore_line(&t.store, &t.new.list("b").unwrap(), own.id, &out, None);
    assert!(out.join("x").exists() && out.join("z").exists());
    assert!(!out.join("y").exists(), "{own:?}");
}

#[test]
fn a_partial_restore_writes_only_the_selected_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::write(root.join("docs/a.md"), b"a").unwrap();
    fs::write(root.join("b.bin"), b"b").unwrap();
    let (store, catalog) = (MemBlockStore::default(), MemCatalog::default());
    make(&root, Method::Snapshot, &store, &catalog, 1, 1).unwrap();
    let globs = globset::GlobSetBuilder::new()
        .add(globset::Glob::new("docs/*.md").unwrap())
        .build()
        .unwrap();
    let out = dir.path().join("out");
    restore_upto(&store, &catalog, 1, &out, Some(&globs));
    assert_eq!(fs::read(out.join("docs/a.md")).unwrap(), b"a");
    assert!(!out.join("b.bin").exists());
}

/// A file entry whose one block holds "the bytes of PATH", put in `store` when `stored`.
fn file_of_one_block(store: &MemBlockStore, path: &[u8], stored: bool) -> Entry {
    let bytes = [b"the bytes of ".as_slice(), path].concat();
    let id = BlockId::of(&bytes);
    if stored {
        store
            .put(&id, &crate::store::encode(&bytes, false))
            .unwrap();
    }
    Entry {
        path: path.to_vec(),
        kind: EntryKind::File,
        mode: 0o644,
        mtime_s: 0,
        mtime_ns: 0,
        size: bytes.len() as u64,
        target: None,
        blocks: vec![id],
    }
}

#[test]
fn a_restore_refuses_paths_that_escape_the_target_or_go_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    symlink(&outside, out.join("trap")).unwrap();
    fs::create_dir_all(out.join("taken")).unwrap();
    let store = MemBlockStore::default();
    // Each file has bytes of its own: a refused file's blocks, fetched ahead, must not end up
    // in the next one.
    let file = |path: &[u8]| file_of_one_block(&store, path, true);
    let evil = Manifest {
        entries: vec![
            file(b"../escape"),
            file(b"/abs"),
            file(b"a/../../escape2"),
            file(b"trap/inside"),
            file(b"taken"),
            file(b"fine"),
        ],
        deleted: Vec::new(),
    };
    let src = LocalSource(&store);
    let mut r = Restorer::new(&out, None, &src).unwrap();
    r.apply(&evil).unwrap();
    let stats = r.finish().unwrap();
    assert_eq!(stats.refused, 5);
    assert_eq!(stats.entries, 1);
    assert_eq!(fs::read(out.join("fine")).unwrap(), b"the bytes of fine");
    assert!(out.join("taken").is_dir());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!dir.path().join("escape").exists());
}

/// Small files' blocks are fetched together; a refused file whose blocks are on no holder fails
/// nothing around it.
#[test]
fn a_refused_file_whose_blocks_are_missing_fails_nothing_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    fs::create_dir_all(out.join("taken")).unwrap();
    let store = MemBlockStore::default();
    let file = |path: &[u8], stored: bool| file_of_one_block(&store, path, stored);
    let manifest = Manifest {
        entries: vec![
            file(b"before", true),
            file(b"taken", false),
            file(b"after", true),
        ],
        deleted: Vec::new(),
    };
    let src = LocalSource(&store);
    let mut r = Restorer::new(&out, None, &src).unwrap();
    r.apply(&manifest).unwrap();
    let stats = r.finish().unwrap();
    assert_eq!((stats.entries, stats.refused), (2, 1));
    assert_eq!(
        fs::read(out.join("before")).unwrap(),
        b"the bytes of before"
    );
    assert_eq!(fs::read(out.join("after")).unwrap(), b"the bytes of after");
}

#[test]
fn special_and_unreadable_files_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("ok"), b"ok").unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (store, catalog) = (MemBlockStore::default(), MemCatalog::default());
    let (rec, stats) = make(&root, Method::Snapshot, &store, &catalog, 1, 1).unwrap();
    assert_eq!(stats.skipped, 1);
    assert_eq!(rec.skipped, 1);
    assert_eq!(rec.files, 1);
}

/// A store whose disk fills up after `room` blocks.
struct FullDisk {
    inner: MemBlockStore,
    room: std::sync::atomic::AtomicUsize,
}

impl crate::store::BlockStore for FullDisk {
    fn put(&self, id: &BlockId, encoded: &[u8]) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.room.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.room.store(0, Ordering::SeqCst);
            return Err(StoreError::Io {
                path: "blocks".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        self.inner.put(id, encoded)
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
    fn list(&self) -> Result<Vec<(BlockId, std::time::SystemTime)>, StoreError> {
        self.inner.list()
    }
}

#[test]
fn a_full_disk_stops_the_backup_with_a_clear_error_and_no_archive_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    for i in 0..10u8 {
        fs::write(root.join(format!("f{i}")), vec![i; 1000]).unwrap();
    }
    let store = FullDisk {
        inner: MemBlockStore::default(),
        room: 4.into(),
    };
    let catalog = MemCatalog::default();
    let err = make(&root, Method::Delta, &store, &catalog, 1, 1).unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(!err.to_string().contains('\n'));
    assert!(catalog.list("b").unwrap().is_empty());
    // Room again: the next run completes, reusing the blocks already written.
    store.room.store(100, std::sync::atomic::Ordering::SeqCst);
    let (rec, stats) = make(&root, Method::Delta, &store, &catalog, 1, 2).unwrap();
    assert_eq!(rec.id, id(1, 1));
    assert!(
        stats.new_blocks < 10,
        "finished blocks were redone: {stats:?}"
    );
}
