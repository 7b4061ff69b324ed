//! Backup, replication and restore with real agents on loopback.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{free_port, wait_until, Node};
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

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "dcish failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn archives(node: &Node, blade: &str) -> Vec<Value> {
    let out = node.dcish(&["--json", "archives", blade]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
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

fn all_alive(nodes: &[&Node], n: usize) {
    let converged = wait_until(Duration::from_secs(30), || {
        nodes.iter().all(|node| {
            node.members()
                .is_some_and(|m| m.iter().filter(|m| m["state"] == "alive").count() == n)
        })
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
    let b1 = Node::start(
        tmp.path(),
        "b1",
        ports[0],
        &[],
        &[
            "--backup-root",
            root.to_str().unwrap(),
            "--replication-factor",
            "2",
            "--config",
            &cfg,
        ],
    );
    let b2 = Node::start(tmp.path(), "b2", ports[1], &[ports[0]], &[]);
    let b3 = Node::start(tmp.path(), "b3", ports[2], &[ports[0]], &[]);
    all_alive(&[&b1, &b2, &b3], 3);

    let out = ok(b1.dcish(&["backup", "now"]));
    assert!(
        out.contains("archive 1 (snapshot") && out.contains("complete"),
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
        out.contains("archive 2 (delta") && out.contains("complete"),
        "{out}"
    );

    let list = archives(&b2, "b1");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["kind"], "snapshot");
    assert_eq!(list[1]["kind"], "delta");
    for a in &list {
        assert_eq!(a["complete"], true, "{a}");
        assert_eq!(a["holders"].as_array().unwrap().len(), 2, "{a}");
        for key in ["id", "time", "bytes", "files"] {
            assert!(a[key].is_u64(), "{key} in {a}");
        }
    }

    // The owner dies and its data dir is gone.
    b1.signal(libc::SIGKILL);
    drop(b1);
    fs::remove_dir_all(tmp.path().join("b1")).unwrap();

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
