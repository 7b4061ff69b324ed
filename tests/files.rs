//! The mesh's files through `dcish` as an operator uses it, on three real agents on loopback:
//! each blade exports `logs` read-only and `up` read-write, and b1's operator may use them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{all_see_alive, free_port, ok, Node};
use serde_json::Value;

const BLADES: [&str; 3] = ["b1", "b2", "b3"];

/// The folders blade `name` exports, under `root/name`: `logs` (with a file, a subdirectory, a
/// symlink inside and one leaving the folder) and `up`.
fn exports(root: &Path, name: &str) -> PathBuf {
    let base = root.join(format!("{name}-files"));
    fs::create_dir_all(base.join("logs/sub")).unwrap();
    fs::create_dir_all(base.join("up")).unwrap();
    fs::write(base.join("logs/app.log"), format!("{name} log\n")).unwrap();
    fs::write(base.join("logs/sub/old.log"), b"older\n").unwrap();
    fs::write(base.join("logs/sub/notes.txt"), b"n\n").unwrap();
    fs::write(base.join("secret"), b"not exported\n").unwrap();
    std::os::unix::fs::symlink(base.join("secret"), base.join("logs/escape")).unwrap();
    std::os::unix::fs::symlink("app.log", base.join("logs/current")).unwrap();
    base
}

/// Membership timings that do not declare a busy machine's agents dead: nothing here is about
/// failure detection, and a blade wrongly thought dead is not routed to.
const PATIENT: &str = "[membership]\nprobe_interval_ms = 1000\nprobe_timeout_ms = 500\nindirect_timeout_ms = 900\nsuspicion_mult = 6\n";

fn mesh(root: &Path) -> Vec<Node> {
    let first = free_port();
    let mut nodes = Vec::new();
    for name in BLADES {
        let base = exports(root, name);
        let config = root.join(format!("{name}.toml"));
        fs::write(
            &config,
            format!(
                "{PATIENT}[fs]\noperators = [\"b1\"]\nexport = [\n  {{ name = \"logs\", path = {:?}, mode = \"ro\" }},\n  {{ name = \"up\", path = {:?}, mode = \"rw\" }},\n]\n",
                base.join("logs"),
                base.join("up")
            ),
        )
        .unwrap();
        let join: &[u16] = if nodes.is_empty() { &[] } else { &[first] };
        let port = if nodes.is_empty() { first } else { free_port() };
        nodes.push(Node::start(
            root,
            name,
            port,
            join,
            &["--config", config.to_str().unwrap()],
        ));
    }
    all_see_alive(&nodes, 3);
    nodes
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bytes no one would type: a file of `n` of them spans several chunks.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `dcish` fails with one line on standard error, holding `says`.
fn refused(out: Output, says: &str) {
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "succeeded: {stdout}");
    assert!(
        stderr.contains(says) && stderr.trim().lines().count() == 1,
        "wanted one line with {says:?}, got: {stderr}"
    );
}

#[test]
fn exported_folders_are_browsed_and_files_copied_both_ways_and_to_a_set() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path());
    let b1 = &nodes[0];

    // The top of the tree, the blades, a blade's exports, a folder.
    assert_eq!(ok(b1.dcish(&["ls", "/"])).matches("/\n").count(), 2);
    let blades = ok(b1.dcish(&["ls", "/blades"]));
    assert!(
        ["b1/", "b2/", "b3/"].iter().all(|b| blades.contains(b)),
        "{blades}"
    );
    let exported = ok(b1.dcish(&["ls", "/blades/b2"]));
    assert!(
        exported.contains("0555") && exported.contains("logs/") && exported.contains("0755"),
        "{exported}"
    );
    let logs = ok(b1.dcish(&["ls", "/blades/b2/logs"]));
    assert!(
        logs.contains("app.log") && logs.contains("sub/") && logs.contains("current -> app.log"),
        "{logs}"
    );
    let v: Value =
        serde_json::from_slice(&b1.dcish(&["--json", "ls", "/blades/b2/logs/sub"]).stdout).unwrap();
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["sub/notes.txt", "sub/old.log"]);
    assert_eq!(
        ok(b1.dcish(&["cat", "/blades/b3/logs/current"])),
        "b3 log\n"
    );

    // find and du inside an export.
    let found = ok(b1.dcish(&["find", "/blades/b2/logs", "--name", "*.log"]));
    assert_eq!(
        found,
        "/blades/b2/logs/app.log\n/blades/b2/logs/sub/old.log\n"
    );
    let du: Value =
        serde_json::from_str(&ok(b1.dcish(&["--json", "du", "/blades/b2/logs/sub"]))).unwrap();
    assert_eq!(
        (
            du["bytes"].as_u64(),
            du["files"].as_u64(),
            du["dirs"].as_u64()
        ),
        (Some(8), Some(2), Some(1))
    );

    // put then get, byte for byte, a file of three chunks; the upload leaves no temporary file.
    let data = noise(1_300_000);
    let local = dir.path().join("big.bin");
    fs::write(&local, &data).unwrap();
    ok(b1.dcish(&["put", local.to_str().unwrap(), "/blades/b2/up/"]));
    assert_eq!(
        fs::read(dir.path().join("b2-files/up/big.bin")).unwrap(),
        data
    );
    assert_eq!(
        fs::read_dir(dir.path().join("b2-files/up"))
            .unwrap()
            .count(),
        1
    );
    let back = dir.path().join("back.bin");
    ok(b1.dcish(&["get", "/blades/b2/up/big.bin", back.to_str().unwrap()]));
    assert_eq!(fs::read(&back).unwrap(), data);

    // put to a set: every blade gets the file.
    let conf = dir.path().join("app.conf");
    fs::write(&conf, b"threads = 4\n").unwrap();
    let out = ok(b1.dcish(&[
        "put",
        conf.to_str().unwrap(),
        "up/etc.conf",
        "--to",
        "b[1-3]",
    ]));
    assert!(out.contains("b[1-3]:up/etc.conf"), "{out}");
    for b in BLADES {
        assert_eq!(
            fs::read(dir.path().join(format!("{b}-files/up/etc.conf"))).unwrap(),
            b"threads = 4\n"
        );
    }

    // get from a set: each blade's copy as NAME.BLADE; a blade without the file is named.
    fs::write(dir.path().join("b3-files/up/etc.conf"), b"threads = 8\n").unwrap();
    fs::remove_file(dir.path().join("b1-files/up/etc.conf")).unwrap();
    let into = dir.path().join("gathered");
    fs::create_dir(&into).unwrap();
    let out = b1.dcish(&[
        "get",
        "up/etc.conf",
        into.to_str().unwrap(),
        "--from",
        "@all",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("b2:up/etc.conf -> "), "{stdout}");
    assert!(stdout.contains("b1: up/etc.conf: No such file"), "{stdout}");
    assert_eq!(stderr.trim(), "dcish: get: 1 of 3 blade(s) failed: b1");
    assert_eq!(
        fs::read(into.join("etc.conf.b2")).unwrap(),
        b"threads = 4\n"
    );
    assert_eq!(
        fs::read(into.join("etc.conf.b3")).unwrap(),
        b"threads = 8\n"
    );
    assert_eq!(
        fs::read_dir(&into).unwrap().count(),
        2,
        "no partial copy is left"
    );

    // A script keeps its working directory from line to line.
    let script = dir.path().join("browse.dcish");
    fs::write(
        &script,
        "cd /blades/b3\ncd logs/sub\npwd\ncd ..\nls\ncat app.log\n",
    )
    .unwrap();
    let (stdout, stderr) = text(&b1.dcish(&["-f", script.to_str().unwrap()]));
    assert!(
        stdout.starts_with("/blades/b3/logs/sub\n"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("sub/\n") && stdout.ends_with("b3 log\n"),
        "{stdout}"
    );
}

#[test]
fn paths_leaving_an_export_read_only_exports_and_unknown_names_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path());
    let b1 = &nodes[0];
    let local = dir.path().join("x.txt");
    fs::write(&local, b"x\n").unwrap();
    let local = local.to_str().unwrap();

    // A symlink out of the folder, read or listed through.
    refused(
        b1.dcish(&["cat", "/blades/b2/logs/escape"]),
        "outside-export",
    );
    // `..` never reaches a blade through the tree: it climbs the tree's names, here above /.
    refused(
        b1.dcish(&["cat", "/blades/b2/logs/../../../../etc/passwd"]),
        "climbs above /",
    );
    refused(
        b1.dcish(&["cat", "/blades/b2/logs/../../../etc/passwd"]),
        "the tree holds /blades and /archives",
    );
    // A blade refuses `..` and absolute paths sent to it directly.
    for path in ["../secret", "/etc/passwd"] {
        let payload = format!("<read xmlns=\"urn:dci:fs:1\" export=\"logs\" path=\"{path}\" offset=\"0\" length=\"10\"/>");
        let out = b1.dcish(&["--json", "send", "b2", "--app", "fs", &payload]);
        assert!(!out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["answers"][0]["code"], "bad-path", "{v}");
    }
    // Writes to a read-only export, to an unknown export or blade.
    refused(
        b1.dcish(&["put", local, "/blades/b2/logs/x.txt"]),
        "export logs is read-only",
    );
    assert!(!dir.path().join("b2-files/logs/x.txt").exists());
    refused(
        b1.dcish(&["ls", "/blades/b2/nope"]),
        "no export named \"nope\"",
    );
    refused(b1.dcish(&["put", local, "/blades/b9/up/x.txt"]), "b9");
    refused(b1.dcish(&["ls", "/blades/b9"]), "b9");
    // To a set: a blade that refuses is named on the last line, the others are written.
    refused(
        b1.dcish(&["put", local, "up/../../x.txt", "--to", "@all"]),
        "climbs above /",
    );
    fs::remove_dir_all(dir.path().join("b3-files/up")).unwrap();
    let out = b1.dcish(&["put", local, "up/x.txt", "--to", "@all"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stdout.contains("b[1-2]:up/x.txt") && stdout.contains("b3: export up"),
        "{stdout}"
    );
    assert_eq!(stderr.trim(), "dcish: put: 1 of 3 blade(s) failed: b3");
    assert!(dir.path().join("b2-files/up/x.txt").exists());
    // An operator the blade does not allow.
    refused(nodes[1].dcish(&["ls", "/blades/b2/logs"]), "not-authorized");
}
