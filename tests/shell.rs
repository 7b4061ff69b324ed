//! `dcish exec` and `dcish nodeset` as an operator uses them, on four real agents on loopback:
//! three active blades and a spare, b1's operator allowed to run commands.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{free_port, wait_until, Node};
use serde_json::Value;

fn mesh(root: &Path) -> Vec<Node> {
    let config = root.join("dcid.toml");
    std::fs::write(
        &config,
        "[messaging]\nexec_operators = [\"b1\"]\nexec_timeout_ms = 2000\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let first = free_port();
    let mut nodes = vec![Node::start(root, "b1", first, &[], &["--config", cfg])];
    for (name, role) in [("b2", "active"), ("b3", "active"), ("s1", "spare")] {
        nodes.push(Node::start(
            root,
            name,
            free_port(),
            &[first],
            &["--config", cfg, "--role", role],
        ));
    }
    for n in &nodes {
        wait_until(Duration::from_secs(20), || {
            n.members()
                .is_some_and(|m| m.iter().filter(|m| m["state"] == "alive").count() == 4)
        })
        .unwrap_or_else(|| panic!("{} never saw 4 alive members:\n{}", n.name, n.log_text()));
    }
    nodes
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows(out: &Output) -> Vec<Value> {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn exec_gathers_outputs_by_blade_and_names_every_blade_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path());
    let b1 = &nodes[0];

    // Identical outputs once, under the folded set; exit 0.
    let out = b1.dcish(&["exec", "@active", "--", "echo", "hi"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "---------------\nb[1-3]\n---------------\nhi\n");

    // One JSON object per blade, pdsh-style lines, exclusion.
    let out = b1.dcish(&["--json", "exec", "b[1-3],s1", "-x", "b2", "--", "echo", "x"]);
    assert!(out.status.success());
    let v = rows(&out);
    let blades: Vec<&str> = v.iter().map(|r| r["blade"].as_str().unwrap()).collect();
    assert_eq!(blades, ["b1", "b3", "s1"]);
    for r in &v {
        assert_eq!(r["exit_code"], 0);
        assert_eq!(r["stdout"], "x\n");
        assert_eq!(r["error"], Value::Null);
    }
    let out = b1.dcish(&[
        "exec",
        "--lines",
        "@spares",
        "--",
        "sh",
        "-c",
        "echo a; echo b",
    ]);
    assert_eq!(text(&out).0, "s1: a\ns1: b\n");

    // A failing command: every blade's exit code, and the last line names them all.
    let out = b1.dcish(&[
        "--json",
        "exec",
        "@all",
        "--",
        "sh",
        "-c",
        "echo out; exit 3",
    ]);
    assert!(!out.status.success());
    assert!(rows(&out).iter().all(|r| r["exit_code"] == 3));
    assert_eq!(
        text(&out).1.trim(),
        "dcish: exec: 4 of 4 blade(s) failed: b[1-3],s1"
    );

    // Past its time limit a command is killed, and said so.
    let out = b1.dcish(&[
        "--json",
        "exec",
        "b2",
        "--timeout",
        "0.3",
        "--",
        "sleep",
        "5",
    ]);
    assert!(!out.status.success());
    let v = rows(&out);
    assert!(
        v[0]["error"].as_str().unwrap().starts_with("timed-out"),
        "{v:?}"
    );

    // An operator the blades do not allow gets each blade's refusal.
    let out = nodes[3].dcish(&["--json", "exec", "b[1-2]", "--", "true"]);
    assert!(!out.status.success());
    for r in rows(&out) {
        assert_eq!(r["exit_code"], Value::Null);
        assert!(
            r["error"].as_str().unwrap().starts_with("not-authorized"),
            "{r}"
        );
    }

    // Node sets: resolved against the mesh, folded, and malformed or unknown ones refused.
    let out = b1.dcish(&["nodeset", "--fold", "@all"]);
    assert_eq!(text(&out).0, "b[1-3],s1\n");
    let out = b1.dcish(&["nodeset", "@active", "-x", "b[1-2]"]);
    assert_eq!(text(&out).0, "b3\n");
    for (set, says) in [
        ("b[1-", "bad node set"),
        ("b[4-5]", "unknown blade(s): b[4-5]"),
        ("@racks", "unknown group @racks"),
    ] {
        let out = b1.dcish(&["exec", set, "--", "true"]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(
            stderr.contains(says) && stderr.trim().lines().count() == 1,
            "{set}: {stderr}"
        );
    }

    // A script: sh quoting, comment lines, and a bad line that fails the run but not the lines
    // after it; the same commands read from standard input.
    let script = "# two commands\nexec b1 -- sh -c 'echo \"one  two\"'\nexec b1 -- 'unbalanced\nnodeset --fold @active\n";
    let path = dir.path().join("ops.dcish");
    std::fs::write(&path, script).unwrap();
    let out = b1.dcish(&["-f", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        stdout,
        "---------------\nb1\n---------------\none  two\nb[1-3]\n"
    );
    assert_eq!(
        stderr.trim(),
        "dcish: unbalanced quotes in: exec b1 -- 'unbalanced"
    );
    let mut child = std::process::Command::new(common::DCISH)
        .arg("--agent")
        .arg(b1.socket())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let piped = child.wait_with_output().unwrap();
    assert_eq!(text(&piped), (stdout, stderr));

    // A dead blade is reported as dead, and the others answer without waiting for it.
    let b3 = &nodes[2];
    b3.signal(9);
    wait_until(Duration::from_secs(20), || {
        b1.state_of("b3").as_deref() == Some("dead")
    })
    .expect("b3 never declared dead");
    let out = b1.dcish(&["exec", "@active", "--", "echo", "up"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("b[1-2]\n---------------\nup\n"), "{stdout}");
    assert!(stdout.contains("b3 [dead: not run]"), "{stdout}");
    assert!(stderr.contains("1 of 3 blade(s) failed: b3"), "{stderr}");
}
