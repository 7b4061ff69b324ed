//! Bad input to `dcid` and `dcish`: one line on stderr, exit code 2 (dcid) or non-zero (dcish),
//! nothing written to the data dir, and a running agent that shrugs off garbage from the network.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{dcid_refuses, free_port, keygen, Node, DCID, DCISH};

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

fn assert_refused(args: &[&str], data_dir: &Path, expect: &str) {
    let (code, stderr) = dcid_refuses(args);
    assert_eq!(code, 2, "dcid {args:?} exited {code}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr:?}"
    );
    assert!(
        stderr.starts_with("dcid: ") || stderr.starts_with("error:"),
        "{stderr}"
    );
    assert!(
        stderr.contains(expect),
        "{stderr:?} does not mention {expect:?}"
    );
    assert!(!data_dir.exists(), "{} was created", data_dir.display());
}

#[test]
fn bad_flags_addresses_and_keys_are_refused_without_touching_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let base = ["--name", "x", "--data-dir", d];

    let (code, stderr) = dcid_refuses(&with(&base, &["--frobnicate"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--frobnicate"));
    assert!(!dir.exists());

    assert_refused(
        &with(&base, &["--listen", "not-an-address"]),
        &dir,
        "listen",
    );
    assert_refused(&with(&base, &["--listen", "127.0.0.1:70000"]), &dir, "port");
    assert_refused(
        &with(&base, &["--listen", "/ip4/127.0.0.1/udp/5"]),
        &dir,
        "listen",
    );
    assert_refused(&with(&base, &["--join", "bad host:1"]), &dir, "join");
    assert_refused(&with(&base, &["--zone", "no spaces"]), &dir, "zone");
    assert_refused(&["--name=-x", "--data-dir", d], &dir, "name");

    let missing = tmp.path().join("missing.key");
    assert_refused(
        &with(&base, &["--cluster-key", missing.to_str().unwrap()]),
        &dir,
        "missing.key",
    );
    let bad_key = tmp.path().join("bad.key");
    std::fs::write(&bad_key, "not a key\n").unwrap();
    assert_refused(
        &with(&base, &["--cluster-key", bad_key.to_str().unwrap()]),
        &dir,
        "malformed",
    );
}

#[test]
fn a_bad_config_file_names_the_field_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let cases = [
        ("nmae = 'x'\n", "nmae"),
        ("listen = 7\n", "listen"),
        ("listen = ['nowhere']\n", "listen"),
        (
            "[membership]\nprobe_interval_ms = 100\nprobe_timeout_ms = 500\n",
            "probe_timeout_ms",
        ),
        ("role = 'leader'\n", "role"),
        ("name = \n", "line 1"),
    ];
    for (text, expect) in cases {
        let file = tmp.path().join("dcid.toml");
        std::fs::write(&file, text).unwrap();
        assert_refused(
            &["--config", file.to_str().unwrap(), "--data-dir", d],
            &dir,
            expect,
        );
    }
    let absent = tmp.path().join("absent.toml");
    assert_refused(
        &["--config", absent.to_str().unwrap(), "--data-dir", d],
        &dir,
        "absent.toml",
    );
}

#[test]
fn a_port_in_use_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    assert_refused(
        &[
            "--name",
            "x",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            &listen,
            "--no-mdns",
        ],
        &dir,
        &listen.replace("127.0.0.1:", "/tcp/"),
    );
}

#[test]
fn a_data_dir_in_use_or_unusable_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(tmp.path(), "owner", free_port(), &[], &[]);
    // The running owner's own disk check writes `health-check` (through a `.tmp`) now and then.
    let listing = || -> std::collections::BTreeSet<_> {
        std::fs::read_dir(&node.data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !n.to_string_lossy().starts_with("health-check"))
            .collect()
    };
    let before = listing();
    let listen = format!("127.0.0.1:{}", free_port());
    let (code, stderr) = dcid_refuses(&[
        "--name",
        "intruder",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
        "--listen",
        &listen,
        "--no-mdns",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("in use") && stderr.contains(node.data_dir.to_str().unwrap()),
        "{stderr}"
    );
    assert_eq!(before, listing());
    assert_eq!(node.members().unwrap().len(), 1, "the owner was disturbed");

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let (code, stderr) = dcid_refuses(&[
        "--name",
        "x",
        "--data-dir",
        file.to_str().unwrap(),
        "--no-mdns",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a directory"), "{stderr}");
}

#[test]
fn garbage_from_the_network_does_not_hurt_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let node = Node::start(
        tmp.path(),
        "target",
        free_port(),
        &[],
        &["--cluster-key", key.to_str().unwrap()],
    );
    for junk in [
        &b"\x00\x00\x00\x05hello"[..],
        &[0xffu8; 4096][..],
        b"/multistream/1.0.0\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        let _ = s.write_all(junk);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Half-open connections that never speak are timed out, not kept forever; meanwhile it serves.
    let _idle = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let members = node.members().expect("agent stopped answering");
    assert_eq!(members.len(), 1);
    assert!(
        node.log_text().contains("refused connection"),
        "{}",
        node.log_text()
    );
}

#[test]
fn garbage_on_the_control_socket_gets_an_error_reply_and_the_agent_carries_on() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(tmp.path(), "ctl", free_port(), &[], &[]);
    let mut s = UnixStream::connect(node.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let junk = b"<not-an-envelope/>";
    s.write_all(&(junk.len() as u32).to_be_bytes()).unwrap();
    s.write_all(junk).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.contains("bad-envelope"), "{reply}");
    // An absurd frame length is refused without the agent trying to read it.
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(node.members().unwrap().len(), 1);
}

#[test]
fn dcish_without_an_agent_says_so_in_one_line() {
    let out = std::process::Command::new(DCISH)
        .args(["--agent", "/nonexistent/dcid.sock", "nodes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/dcid.sock"), "{stderr}");
}

#[test]
fn keygen_writes_a_private_key_once() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = keygen(tmp.path(), "c.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("/key/swarm/psk/1.0.0/"));
    let out = std::process::Command::new(DCID)
        .arg("keygen")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
