//! Backup, replication and restore with real agents on loopback.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{archive_id, archives, free_port, ok, wait_until, Node};
use serde_json::Value;

/// A small tree with what a restore must get right: nested dirs, an empty dir and file, modes,
/// a symlink, a file larger than one chunk.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/deep")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("cache")).unwrap();
    let big: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big).unwrap();
    fs::write(root.join("docs/a.md"), b"alpha\n").unwrap();
    fs::write(root.join("docs/deep/b.md"), b"beta\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("cache/junk"), b"excluded").unwrap();
    fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(root.join("secret"), b"s3cret").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("docs/a.md", root.join("link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
}

/// `diff -r` of two trees, plus the modes of every path (diff ignores modes).
fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for entry in walk(a) {
        let rel = entry.strip_prefix(a).unwrap();
        let (ma, mb) = (
            fs::symlink_metadata(&entry).unwrap(),
            fs::symlink_metadata(b.join(rel)).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if !ma.file_type().is_symlink() {
            assert_eq!(
                ma.permissions().mode(),
                mb.permissions().mode(),
                "mode of {}",
                rel.display()
            );
        } else {
            assert_eq!(
                fs::read_link(&entry).unwrap(),
                fs::read_link(b.join(rel)).unwrap()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

fn config(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// Starts the blade `b1`, backing `root` up with the config file `cfg`, onto `factor` holders when
/// given (else the config file's or the default).
fn start_owner(dir: &Path, port: u16, root: &Path, factor: Option<u32>, cfg: &str) -> Node {
    let factor = factor.map(|f| f.to_string());
    let mut args = vec!["--backup-root", root.to_str().unwrap(), "--config", cfg];
    if let Some(f) = &factor {
        args.extend(["--replication-factor", f.as_str()]);
    }
    Node::start(dir, "b1", port, &[], &args)
}

fn all_alive(nodes: &[&Node], n: usize) {
    let converged = wait_until(Duration::from_secs(30), || {
        nodes.iter().all(|node| node.sees_alive(n))
    });
    assert!(converged.is_some(), "the mesh did not converge");
}

/// The whole life of a blade's data: a snapshot, then a delta, both on two holders; the owner
/// dies and its data dir is lost; another node restores the tree exactly (contents, modes,
/// symlinks), sequentially up to the first archive, and only some paths.
#[test]
fn a_blade_backed_up_twice_is_restored_exactly_on_another_node_after_its_data_dir_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    make_tree(&root);
    let cfg = config(tmp.path(), "b1", "[backup]\nexclude_dirs = [\"cache\"]\n");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let b1 = start_owner(tmp.path(), ports[0], &root, Some(2), &cfg);
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &[]);
    let b3_cfg = config(
        tmp.path(),
        "b3",
        &format!("[backup]\nrestore_into = [{:?}]\n", tmp.path()),
    );
    let b3 = Node::start(
        tmp.path(),
        "b3",
        ports[2],
        &[ports[0]],
        &["--config", &b3_cfg],
    );
    all_alive(&[&b1, &b2, &b3], 3);

    let out = ok(b1.dcish(&["backup", "now"]));
    assert!(
        out.contains(".1 (snapshot") && out.contains("complete"),
        "{out}"
    );
    // Expected tree: what was backed up, without the excluded directory.
    let expected = tmp.path().join("expected-1");
    Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&expected)
        .status()
        .unwrap();
    fs::remove_dir_all(expected.join("cache")).unwrap();

    fs::write(root.join("docs/a.md"), b"alpha, second version\n").unwrap();
    fs::write(root.join("docs/new.md"), b"new\n").unwrap();
    let mut big = fs::read(root.join("big.bin")).unwrap();
    big[350_000..350_100].fill(0xAB);
    fs::write(root.join("big.bin"), &big).unwrap();
    let out = ok(b1.dcish(&["backup", "now", "b1"]));
    assert!(
        out.contains(".2 (delta") && out.contains("complete"),
        "{out}"
    );

    let list = archives(&b2, "b1");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["kind"], "snapshot");
    assert_eq!(list[1]["kind"], "delta");
    for a in &list {
        assert_eq!(a["complete"], true, "{a}");
        assert_eq!(a["holders"].as_array().unwrap().len(), 2, "{a}");
        for key in ["epoch", "time", "bytes", "files"] {
            assert!(a[key].is_u64(), "{key} in {a}");
        }
        assert!(archive_id(a).is_some(), "id in {a}");
    }

    // The owner dies and its data dir is gone.
    b1.signal(libc::SIGKILL);
    drop(b1);
    fs::remove_dir_all(tmp.path().join("b1")).unwrap();

    // Read redirection: with the owner down, its files are listed and read from the holders.
    let listing = ok(b2.dcish(&["ls", "/archives/b1/latest/docs"]));
    assert!(
        listing.contains("a.md") && listing.contains("new.md") && listing.contains("deep/"),
        "{listing}"
    );
    let top = ok(b3.dcish(&["ls", "/archives/b1/latest"]));
    assert!(
        top.contains("link -> docs/a.md") && !top.contains("cache"),
        "{top}"
    );
    let cat = b3.dcish(&["cat", "/archives/b1/latest/docs/a.md"]);
    assert_eq!(ok(cat), "alpha, second version\n");
    // An older archive's tree, by id (EPOCH.NUMBER) or by its number alone; the archives of a
    // blade are its directories.
    let list = archives(&b3, "b1");
    let id = |a: &Value| a["id"].as_str().unwrap().to_string();
    let (first, second) = (id(&list[0]), id(&list[1]));
    let cat = b3.dcish(&["cat", &format!("/archives/b1/{first}/docs/a.md")]);
    assert_eq!(ok(cat), "alpha\n");
    let cat = b3.dcish(&["cat", "/archives/b1/1/docs/a.md"]);
    assert_eq!(ok(cat), "alpha\n");
    let ids = ok(b3.dcish(&["ls", "/archives/b1"]));
    assert!(
        ids.contains(&format!(" {first}/"))
            && ids.contains(&format!(" {second}/"))
            && ids.contains(" latest/"),
        "{ids}"
    );
    // find and du inside an archived tree.
    let found = ok(b3.dcish(&["find", "/archives/b1/1", "--name", "*.md"]));
    assert_eq!(
        found,
        "/archives/b1/1/docs/a.md\n/archives/b1/1/docs/deep/b.md\n"
    );
    let du: Value =
        serde_json::from_str(&ok(b3.dcish(&["--json", "du", "/archives/b1/1/docs"]))).unwrap();
    assert_eq!(
        (
            du["bytes"].as_u64(),
            du["files"].as_u64(),
            du["dirs"].as_u64()
        ),
        (Some(11), Some(2), Some(2))
    );
    let out = b2.dcish(&["cat", "/archives/b1/latest/big.bin"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(root.join("big.bin")).unwrap());
    assert!(
        !b2.dcish(&["cat", "/archives/b1/latest/docs"])
            .status
            .success(),
        "a directory is not catted"
    );

    // Another node's restore writes only where b3's operator allowed.
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = b2.dcish(&[
        "restore",
        "b1",
        "--on",
        "b3",
        "--to",
        elsewhere.path().join("x").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("may write only under"),
        "{err}"
    );
    assert!(!elsewhere.path().join("x").exists());
    let full = tmp.path().join("restored-full");
    let out = ok(b2.dcish(&[
        "restore",
        "b1",
        "--on",
        "b3",
        "--to",
        full.to_str().unwrap(),
    ]));
    assert!(out.contains("on b3"), "{out}");
    let mut expected_2 = tmp.path().join("expected-2");
    Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&expected_2)
        .status()
        .unwrap();
    fs::remove_dir_all(expected_2.join("cache")).unwrap();
    assert_same_tree(&expected_2, &full);
    // Into `<data-dir>/restores` of a node with no `restore_into` of its own: allowed from the
    // start (the compose campaign's checker found it refused until something made the directory).
    let into = b2.data_dir.join("restores/from-b3");
    ok(b3.dcish(&[
        "restore",
        "b1",
        "--on",
        "b2",
        "--to",
        into.to_str().unwrap(),
    ]));
    assert_same_tree(&expected_2, &into);

    // Sequentially up to archive 1 only: the first versions, nothing of archive 2.
    let first = tmp.path().join("restored-1");
    ok(b3.dcish(&[
        "restore",
        "b1",
        "--archive",
        "1",
        "--to",
        first.to_str().unwrap(),
    ]));
    assert_same_tree(&expected, &first);

    // Only some paths.
    let part = tmp.path().join("restored-docs");
    ok(b2.dcish(&[
        "restore",
        "b1",
        "--path",
        "docs/*.md",
        "--to",
        part.to_str().unwrap(),
    ]));
    assert_eq!(fs::read(part.join("docs/new.md")).unwrap(), b"new\n");
    assert!(!part.join("big.bin").exists() && !part.join("docs/deep/b.md").exists());

    // Unknown archives and blades are clear one-line errors.
    let out = b2.dcish(&[
        "restore",
        "b1",
        "--archive",
        "9",
        "--to",
        first.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no archive 9"),
        "{out:?}"
    );
    expected_2 = tmp.path().join("nowhere");
    let out = b2.dcish(&["restore", "nosuch", "--to", expected_2.to_str().unwrap()]);
    assert!(!out.status.success());
}

/// The blocks the owner's log says it sent `holder_id` for archive `number`: while scanning and
/// in the sync rounds after.
fn pushed_blocks(log: &str, holder_id: &str, number: u64) -> Option<u64> {
    let id_number = |l: &str| {
        let id = l.split("archive=").nth(1)?.split_whitespace().next()?;
        id.split_once('.')?.1.parse::<u64>().ok()
    };
    let pushes: Vec<u64> = log
        .lines()
        .filter(|l| {
            (l.contains("archive pushed") || l.contains("blocks pushed while scanning"))
                && l.contains(holder_id)
        })
        .filter(|l| id_number(l) == Some(number))
        .filter_map(|l| {
            l.split("blocks=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    (!pushes.is_empty()).then(|| pushes.iter().sum())
}

/// A holder killed during a backup makes the waited backup fail with the reason; when it comes
/// back with its data dir, the next peersync round gives it the archive, shipping only the blocks
/// it lacks.
#[test]
fn a_holder_killed_and_restarted_catches_up_by_peersync_with_only_the_blocks_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    make_tree(&root);
    let cfg = config(
        tmp.path(),
        "b1",
        "[backup]\nmethod = \"snapshot\"\nsync_interval = \"500ms\"\n",
    );
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let b1 = start_owner(tmp.path(), ports[0], &root, None, &cfg);
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &[]);
    let b3 = Node::start(tmp.path(), "b3", ports[2], &[ports[0]], &[]);
    all_alive(&[&b1, &b2, &b3], 3);
    ok(b1.dcish(&["backup", "now"]));
    let b3_id = b3.id();

    b3.signal(libc::SIGKILL);
    drop(b3);
    assert!(
        wait_until(Duration::from_secs(15), || b1.state_of("b3").as_deref()
            == Some("dead"))
        .is_some()
    );
    fs::write(root.join("docs/a.md"), b"changed while b3 was away\n").unwrap();
    let out = b1.dcish(&["backup", "now"]);
    assert!(
        !out.status.success(),
        "a backup missing a holder is not complete"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("incomplete") && err.contains("b3"), "{err}");
    let list = archives(&b1, "b1");
    assert_eq!(list[1]["complete"], false, "{list:?}");
    assert_eq!(list[1]["lacking"][0], "b3", "{list:?}");

    let b3 = Node::start(tmp.path(), "b3", ports[2], &[ports[0]], &[]);
    let caught_up = wait_until(Duration::from_secs(30), || {
        let list = archives(&b1, "b1");
        list.len() == 2
            && list
                .iter()
                .all(|a| a["complete"] == true && a["holders"].as_array().unwrap().len() == 2)
    });
    assert!(
        caught_up.is_some(),
        "b3 never caught up: {:?}\n{}",
        archives(&b1, "b1"),
        b1.log_text()
    );
    // The snapshot lists every block, but b3 had all but the changed file's and the manifest's.
    let log = b1.log_text();
    let first = pushed_blocks(&log, &b3_id, 1).expect("archive 1 push to b3 logged");
    let second = pushed_blocks(&log, &b3_id, 2).expect("archive 2 push to b3 logged");
    assert!(first >= 6, "the first push ships the tree: {first}");
    assert!(
        second <= 3,
        "peersync shipped {second} blocks, more than the changed ones"
    );
    drop(b3);
}

/// A holder dead past the repair grace is replaced by the next node in placement order, which
/// receives the data until the factor is met again.
#[test]
fn a_holder_killed_for_good_is_replaced_and_the_factor_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    make_tree(&root);
    let cfg = config(
        tmp.path(),
        "b1",
        "[backup]\nrepair_grace = \"2s\"\nsync_interval = \"500ms\"\n",
    );
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let b1 = start_owner(tmp.path(), ports[0], &root, Some(2), &cfg);
    let mut others: Vec<Node> = (1..4)
        .map(|i| {
            Node::start(
                tmp.path(),
                &format!("b{}", i + 1),
                ports[i],
                &[ports[0]],
                &[],
            )
        })
        .collect();
    all_alive(&[&b1, &others[0], &others[1], &others[2]], 4);
    ok(b1.dcish(&["backup", "now"]));
    let holders: Vec<String> = archives(&b1, "b1")[0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    assert_eq!(holders.len(), 2);
    let victim = others.iter().position(|n| n.name == holders[0]).unwrap();
    let spare = others
        .iter()
        .find(|n| !holders.contains(&n.name))
        .unwrap()
        .name
        .clone();
    let dead = others.remove(victim);
    dead.signal(libc::SIGKILL);
    drop(dead);

    let repaired = wait_until(Duration::from_secs(30), || {
        archives(&b1, "b1").first().is_some_and(|a| {
            a["complete"] == true
                && a["holders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h == spare.as_str())
                && a["holders"].as_array().unwrap().len() == 2
        })
    });
    assert!(
        repaired.is_some(),
        "not repaired: {:?}",
        archives(&b1, "b1")
    );
    // The new holder alone can serve a restore.
    let out_dir = tmp.path().join("restored");
    let spare_node = others.iter().find(|n| n.name == spare).unwrap();
    ok(spare_node.dcish(&["restore", "b1", "--to", out_dir.to_str().unwrap()]));
    assert_eq!(fs::read(out_dir.join("docs/a.md")).unwrap(), b"alpha\n");
}

fn block_path(node_dir: &Path, content: &[u8]) -> std::path::PathBuf {
    let hex = dci::store::BlockId::of(content).to_hex();
    node_dir.join("blocks").join(&hex[..2]).join(hex)
}

/// Aging removes archives past the period on the owner and every holder, and garbage collection
/// then removes the blocks only they referenced, and no others.
#[test]
fn aging_removes_old_archives_and_only_their_unreferenced_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("x"), b"first version of x").unwrap();
    fs::write(root.join("y"), b"y never changes").unwrap();
    let body = "[backup]\nmethod = \"snapshot\"\naging = \"3s\"\nsync_interval = \"500ms\"\ngc_interval = \"1s\"\ngc_grace = \"1s\"\n";
    let cfg = config(tmp.path(), "all", body);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let b1 = start_owner(tmp.path(), ports[0], &root, None, &cfg);
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &["--config", &cfg]);
    let b3 = Node::start(tmp.path(), "b3", ports[2], &[ports[0]], &["--config", &cfg]);
    all_alive(&[&b1, &b2, &b3], 3);
    ok(b1.dcish(&["backup", "now"]));
    let dirs: Vec<&Path> = [&b1, &b2, &b3]
        .iter()
        .map(|n| n.data_dir.as_path())
        .collect();
    for d in &dirs {
        assert!(block_path(d, b"first version of x").exists());
    }
    std::thread::sleep(Duration::from_millis(3200));
    fs::write(root.join("x"), b"second version of x").unwrap();
    ok(b1.dcish(&["backup", "now"]));

    let aged = wait_until(Duration::from_secs(20), || {
        let list = archives(&b1, "b1");
        list.len() == 1
            && archive_id(&list[0]).is_some_and(|(_, number)| number == 2)
            && list[0]["holders"].as_array().unwrap().len() == 2
            && dirs
                .iter()
                .all(|d| !block_path(d, b"first version of x").exists())
    });
    assert!(aged.is_some(), "not aged: {:?}", archives(&b1, "b1"));
    for d in &dirs {
        assert!(
            block_path(d, b"second version of x").exists(),
            "{}",
            d.display()
        );
        assert!(
            block_path(d, b"y never changes").exists(),
            "{}",
            d.display()
        );
    }
    let out_dir = tmp.path().join("restored");
    ok(b3.dcish(&["restore", "b1", "--to", out_dir.to_str().unwrap()]));
    assert_eq!(fs::read(out_dir.join("x")).unwrap(), b"second version of x");
}

/// `kill -9` of the owner in the middle of a backup leaves a store where every block is whole
/// and correct; after a restart the next backup completes and restores exactly.
#[test]
fn a_store_killed_mid_backup_is_consistent_and_the_next_backup_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    make_tree(&root);
    for i in 0..40u32 {
        let body: Vec<u8> = (0..100_000u32)
            .map(|j| (j.wrapping_mul(i + 7) >> 5) as u8)
            .collect();
        fs::write(root.join(format!("f{i}")), body).unwrap();
    }
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let args = [
        "--backup-root",
        root.to_str().unwrap(),
        "--replication-factor",
        "1",
    ];
    let b1 = Node::start(tmp.path(), "b1", ports[0], &[], &args);
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &[]);
    all_alive(&[&b1, &b2], 2);
    let mut shell = Command::new(common::DCISH)
        .arg("--agent")
        .arg(b1.socket())
        .args(["backup", "now"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    b1.signal(libc::SIGKILL);
    drop(b1);
    let _ = shell.wait();

    let store = dci::store::FsBlockStore::open(&tmp.path().join("b1/blocks")).unwrap();
    use dci::store::BlockStore;
    for (id, _) in store.list().unwrap() {
        let enc = store.get(&id).unwrap().unwrap();
        dci::store::decode_verified(&id, &enc).expect("a torn or corrupt block after kill -9");
    }
    drop(store);

    let b1 = Node::start(tmp.path(), "b1", ports[0], &[ports[1]], &args);
    all_alive(&[&b1, &b2], 2);
    ok(b1.dcish(&["backup", "now"]));
    let out_dir = tmp.path().join("restored");
    ok(b2.dcish(&["restore", "b1", "--to", out_dir.to_str().unwrap()]));
    assert_same_tree(&root, &out_dir);
}

/// Every block file of a node's store, as (path, id).
fn block_files(node_dir: &Path) -> Vec<(std::path::PathBuf, dci::store::BlockId)> {
    let store = dci::store::FsBlockStore::open(&node_dir.join("blocks")).unwrap();
    use dci::store::BlockStore;
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|(id, _)| {
            let hex = id.to_hex();
            (node_dir.join("blocks").join(&hex[..2]).join(&hex), id)
        })
        .collect()
}

fn block_ok(path: &Path, id: &dci::store::BlockId) -> bool {
    fs::read(path).is_ok_and(|enc| dci::store::decode_verified(id, &enc).is_ok())
}

/// The scrub finds a corrupted block on the owner and on a holder; each gets a good copy back
/// from the other, and the data still restores.
#[test]
fn corrupt_blocks_are_found_by_the_scrub_and_fetched_again_from_another_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    make_tree(&root);
    let cfg = config(
        tmp.path(),
        "all",
        "[backup]\nscrub_interval = \"1s\"\nsync_interval = \"500ms\"\n",
    );
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let b1 = start_owner(tmp.path(), ports[0], &root, Some(1), &cfg);
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &["--config", &cfg]);
    all_alive(&[&b1, &b2], 2);
    ok(b1.dcish(&["backup", "now"]));
    let on_b1 = block_files(&b1.data_dir);
    let on_b2 = block_files(&b2.data_dir);
    let (p1, id1) = on_b1[0].clone();
    let (p2, id2) = on_b2.iter().find(|(_, id)| *id != id1).unwrap().clone();
    for p in [&p1, &p2] {
        let mut bytes = fs::read(p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        fs::write(p, bytes).unwrap();
    }
    let healed = wait_until(Duration::from_secs(20), || {
        block_ok(&p1, &id1) && block_ok(&p2, &id2)
    });
    assert!(
        healed.is_some(),
        "not healed:\n{}\n{}",
        b1.log_text(),
        b2.log_text()
    );
    let status = ok(b1.dcish(&["--json", "status"]));
    assert!(status.contains("backup-corrupt-blocks"), "{status}");
    let out_dir = tmp.path().join("restored");
    ok(b2.dcish(&["restore", "b1", "--to", out_dir.to_str().unwrap()]));
    assert_eq!(
        fs::read(out_dir.join("big.bin")).unwrap(),
        fs::read(root.join("big.bin")).unwrap()
    );
}

/// In continuous mode a change to the tree is archived and on its holder moments later, without
/// anyone asking.
#[test]
fn continuous_mode_ships_a_change_to_the_holders_within_moments() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("first"), b"there at start").unwrap();
    let cfg = config(tmp.path(), "b1", "[backup]\ncontinuous = true\n");
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let b1 = start_owner(tmp.path(), ports[0], &root, Some(1), &cfg);
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &[]);
    all_alive(&[&b1, &b2], 2);
    let complete = |n: usize| {
        let list = archives(&b2, "b1");
        list.len() >= n && list.iter().all(|a| a["complete"] == true)
    };
    assert!(
        wait_until(Duration::from_secs(20), || complete(1)).is_some(),
        "no first archive: {:?}\n{}",
        archives(&b2, "b1"),
        b1.log_text()
    );
    let before = archives(&b2, "b1").len();
    fs::write(root.join("second"), b"written later").unwrap();
    let took = wait_until(Duration::from_secs(20), || complete(before + 1));
    assert!(
        took.is_some(),
        "the change was not archived: {:?}",
        archives(&b2, "b1")
    );
    eprintln!("change archived and held after {took:?}");
    let out_dir = tmp.path().join("restored");
    ok(b2.dcish(&["restore", "b1", "--to", out_dir.to_str().unwrap()]));
    assert_eq!(fs::read(out_dir.join("second")).unwrap(), b"written later");
}

/// When the holders change (here the manual list is edited), the new holder gets the data first;
/// only then is the former one told to forget it, and its garbage collection frees the space.
#[test]
fn a_former_holder_is_released_only_after_the_new_one_has_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    make_tree(&root);
    let gc = config(
        tmp.path(),
        "gc",
        "[backup]\ngc_interval = \"1s\"\ngc_grace = \"1s\"\n",
    );
    let to_b2 = config(
        tmp.path(),
        "to-b2",
        "[backup]\nholders = [\"b2\"]\nsync_interval = \"500ms\"\n",
    );
    let to_b3 = config(
        tmp.path(),
        "to-b3",
        "[backup]\nholders = [\"b3\"]\nsync_interval = \"500ms\"\n",
    );
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let owner = |cfg: &str, join: &[u16]| {
        Node::start(
            tmp.path(),
            "b1",
            ports[0],
            join,
            &[
                "--backup-root",
                root.to_str().unwrap(),
                "--replication-factor",
                "1",
                "--config",
                cfg,
            ],
        )
    };
    let b1 = owner(&to_b2, &[]);
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &["--config", &gc]);
    let b3 = Node::start(tmp.path(), "b3", ports[2], &[ports[0]], &["--config", &gc]);
    all_alive(&[&b1, &b2, &b3], 3);
    ok(b1.dcish(&["backup", "now"]));
    assert!(!block_files(&b2.data_dir).is_empty());
    assert!(block_files(&b3.data_dir).is_empty());

    b1.terminate();
    let b1 = owner(&to_b3, &[ports[1]]);
    let moved = wait_until(Duration::from_secs(30), || {
        archives(&b1, "b1")
            .first()
            .is_some_and(|a| a["complete"] == true && a["holders"] == serde_json::json!(["b3"]))
            && block_files(&b2.data_dir).is_empty()
    });
    assert!(
        moved.is_some(),
        "not moved: {:?}\n{}",
        archives(&b1, "b1"),
        b2.log_text()
    );
    let out_dir = tmp.path().join("restored");
    ok(b3.dcish(&["restore", "b1", "--to", out_dir.to_str().unwrap()]));
    assert_eq!(fs::read(out_dir.join("docs/a.md")).unwrap(), b"alpha\n");
}

/// The owner is gone for good and then one of its two holders too: the surviving holder gives a
/// copy to the next node in placement order, so the factor is met again without the owner.
#[test]
fn without_the_owner_the_surviving_holder_restores_the_factor() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    make_tree(&root);
    let cfg = config(
        tmp.path(),
        "all",
        "[backup]\nrepair_grace = \"2s\"\nsync_interval = \"500ms\"\n",
    );
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let b1 = start_owner(tmp.path(), ports[0], &root, Some(2), &cfg);
    let mut others: Vec<Node> = (1..4)
        .map(|i| {
            Node::start(
                tmp.path(),
                &format!("b{}", i + 1),
                ports[i],
                &[ports[0]],
                &["--config", &cfg],
            )
        })
        .collect();
    all_alive(&[&b1, &others[0], &others[1], &others[2]], 4);
    ok(b1.dcish(&["backup", "now"]));
    let holders: Vec<String> = archives(&b1, "b1")[0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    b1.signal(libc::SIGKILL);
    drop(b1);
    let victim = others.iter().position(|n| n.name == holders[0]).unwrap();
    let dead = others.remove(victim);
    dead.signal(libc::SIGKILL);
    drop(dead);
    let spare = others.iter().find(|n| !holders.contains(&n.name)).unwrap();

    let repaired = wait_until(Duration::from_secs(30), || {
        archives(spare, "b1").first().is_some_and(|a| {
            a["complete"] == true
                && a["holders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h == spare.name.as_str())
        })
    });
    assert!(
        repaired.is_some(),
        "not repaired: {:?}",
        archives(spare, "b1")
    );
    let out_dir = tmp.path().join("restored");
    ok(spare.dcish(&["restore", "b1", "--to", out_dir.to_str().unwrap()]));
    assert_eq!(
        fs::read(out_dir.join("big.bin")).unwrap(),
        fs::read(root.join("big.bin")).unwrap()
    );
}
