//! `dcish exec` and `dcish nodeset` as an operator uses them, on four real agents on loopback:
//! three active blades and a spare, b1's operator allowed to run commands for 20 s at most, and
//! answers to other requests waited for 1 s.

mod common;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, wait_until, Node};
use serde_json::Value;

fn mesh(root: &Path) -> Vec<Node> {
    let config = root.join("dcid.toml");
    std::fs::write(
        &config,
        "[messaging]\nexec_operators = [\"b1\"]\nexec_timeout_ms = 20000\nanswer_wait_ms = 1000\n",
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
        wait_until(Duration::from_secs(20), || n.sees_alive(4))
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

/// One mesh for every case (two would double the load, and a starved agent loses its lease).
#[test]
fn exec_streams_gathers_and_reports_every_blade() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path());
    streams_lines_as_they_come_in_order_with_stdin_fanout_timeouts_and_exit_codes(
        dir.path(),
        &nodes,
    );
    interactive_session_through_a_terminal(dir.path(), &nodes[0]);
    top_lists_every_blade_with_figures_in_range(&nodes[0]);
    peerlets_lists_types_and_instances_and_stops_them(&nodes);
    // Last: it kills the spare, then a blade.
    gathers_outputs_by_blade_and_names_every_blade_that_failed(dir.path(), &nodes);
}

fn gathers_outputs_by_blade_and_names_every_blade_that_failed(dir: &Path, nodes: &[Node]) {
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
    let path = dir.join("ops.dcish");
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
    let piped = dcish_with_input(b1, &[], script.as_bytes());
    assert_eq!(text(&piped), (stdout, stderr));

    // A dead blade is reported as dead, and the others answer without waiting for it. The spare
    // goes first, so that nobody takes b3 over.
    let s1 = &nodes[3];
    s1.signal(9);
    wait_until(Duration::from_secs(20), || {
        b1.state_of("s1").as_deref() == Some("dead")
    })
    .expect("s1 never declared dead");
    // Forgotten, so that b1 and b2 stay a majority (and keep their leases) once b3 is gone too.
    let out = b1.dcish(&["forget", "s1"]);
    assert!(out.status.success(), "{:?}", text(&out));
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

/// `dcish --agent <b1> ARGS` with `input` on its standard input.
fn dcish_with_input(node: &Node, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(common::DCISH)
        .arg("--agent")
        .arg(node.socket())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer of its own: dcish refuses oversized input without reading all of it.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

fn streams_lines_as_they_come_in_order_with_stdin_fanout_timeouts_and_exit_codes(
    dir: &Path,
    nodes: &[Node],
) {
    let b1 = &nodes[0];

    // Many lines from every blade: each blade's lines all there, in order, none twice.
    let out = b1.dcish(&["exec", "--lines", "@active", "--", "seq", "0", "4999"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for blade in ["b1", "b2", "b3"] {
        let prefix = format!("{blade}: ");
        let got: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect();
        let expected: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        assert!(
            got == expected,
            "{blade}: {} lines, first {:?}",
            got.len(),
            got.first()
        );
    }
    assert_eq!(stdout.lines().count(), 15_000);

    // A command may run longer than the agent's answer wait: its own time limit counts.
    let out = b1.dcish(&["exec", "b3", "--", "sh", "-c", "sleep 2; echo late"]);
    assert_eq!(text(&out).0, "---------------\nb3\n---------------\nlate\n");

    // Output is printed while the command still runs: the second line is only written once the
    // test saw the first one.
    let flag = dir.join("go-on");
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.02; done; echo second",
        flag.display()
    );
    let mut child = Command::new(common::DCISH)
        .arg("--agent")
        .arg(b1.socket())
        .args(["exec", "--lines", "b2", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "b2: first");
    std::fs::write(&flag, "").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "b2: second");
    assert!(lines.next().is_none());
    assert!(child.wait().unwrap().success());

    // stderr lines go to stderr, prefixed too; a non-zero exit is said per blade and in the
    // last line.
    let out = b1.dcish(&[
        "exec",
        "--lines",
        "b[1-2]",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    let mut sorted: Vec<&str> = stdout.lines().collect();
    sorted.sort();
    assert_eq!(
        sorted,
        ["b1: [exit 7]", "b1: out", "b2: [exit 7]", "b2: out"]
    );
    assert!(
        stderr.contains("b1: err\n") && stderr.contains("b2: err\n"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().last().unwrap(),
        "dcish: exec: 2 of 2 blade(s) failed: b[1-2]"
    );

    // A time limit hits only the blades that pass it: the first to take the lock ends at once,
    // the others are killed and said so, each in its own row.
    let lock = dir.join("lock");
    let script = format!("mkdir {} 2>/dev/null && exit 0; sleep 30", lock.display());
    let out = b1.dcish(&[
        "--json",
        "exec",
        "@active",
        "--timeout",
        "1",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(!out.status.success());
    let v = rows(&out);
    let done: Vec<&Value> = v.iter().filter(|r| r["exit_code"] == 0).collect();
    let killed: Vec<&Value> = v
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("timed-out"))
        })
        .collect();
    assert_eq!((done.len(), killed.len()), (1, 2), "{v:?}");
    assert!(text(&out).1.contains("2 of 3 blade(s) failed"));

    // Standard input goes to every blade's command, binary bytes included.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = dcish_with_input(b1, &["exec", "--stdin", "@active", "--", "md5sum"], &data);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let local = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&data)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        stdout,
        format!(
            "---------------\nb[1-3]\n---------------\n{}",
            String::from_utf8_lossy(&local.stdout)
        )
    );
    let out = dcish_with_input(
        b1,
        &["exec", "--stdin", "b1", "--", "cat"],
        &[b'x'; 600 << 10],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        "dcish: usage: --stdin: standard input is over 512 KiB, the most one command can carry"
    );

    // With a fan-out of 1 the blades run one after the other: none finds another running.
    let running = dir.join("running");
    let script = format!(
        "mkdir {0} || exit 9; sleep 0.2; rmdir {0}",
        running.display()
    );
    let out = b1.dcish(&[
        "--json",
        "exec",
        "-f",
        "1",
        "b[1-3],s1",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", text(&out).0);
    assert_eq!(rows(&out).len(), 4);
    let out = b1.dcish(&["exec", "--fanout", "0", "b1", "--", "true"]);
    assert_eq!(
        text(&out).1.trim(),
        "dcish: usage: --fanout must be at least 1"
    );
}

/// Runs `dcish` on a pseudo-terminal (its home `home`), types `lines` one at a time (each once
/// the prompt is back) and returns what the terminal showed.
fn on_a_terminal(home: &Path, node: &Node, lines: &[&str]) -> (String, std::process::ExitStatus) {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers given; the rest may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty failed");
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let mut child = Command::new(common::DCISH)
        .arg("--agent")
        .arg(node.socket())
        .env("NO_COLOR", "1")
        .env("HOME", home)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    // A reader thread, so that a dcish that stops answering fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut screen = String::new();
    let mut writer = master;
    let mut prompts = 0;
    for line in lines.iter().chain(std::iter::once(&"exit")) {
        prompts += 1;
        // The editor redraws the prompt as it completes; a new line starts where it turns
        // bracketed paste on again.
        while screen.matches("\u{1b}[?2004h").count() < prompts {
            let bytes = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no prompt after:\n{screen}"));
            screen.push_str(&String::from_utf8_lossy(&bytes));
        }
        writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    let status = child.wait().unwrap();
    while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
        screen.push_str(&String::from_utf8_lossy(&bytes));
    }
    (screen, status)
}

/// The text of a terminal transcript: control sequences (`ESC [ ... letter`) and carriage
/// returns taken out.
fn plain(screen: &str) -> String {
    let mut out = String::new();
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) && c != '[' {
                        break;
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn interactive_session_through_a_terminal(dir: &Path, b1: &Node) {
    // At a terminal dcish prompts, runs each line, says what went wrong in one line, prompts
    // again, and leaves on `exit` with a status saying whether any line failed. Tab completes
    // command names, blade names and groups, and paths of the mesh's file tree (asked of the
    // agent); Ctrl-P brings back the last line; the history outlives the session.
    let (screen, status) = on_a_terminal(
        dir,
        b1,
        &[
            "exec --lines b2 -- echo 'one  two'",
            "exec 'b[1-' -- true",
            "exec --stdin b1 -- cat",
            "cd /ar\ts\t",
            "cd /",
            "nodese\t--fold @act\t",
            "exec --lines s\t -- echo spare",
            "\x10",
        ],
    );
    let screen = plain(&screen);
    let mut rest = screen.as_str();
    for expected in [
        "dcish:/> exec --lines b2 -- echo 'one  two'\nb2: one  two\n",
        "dcish:/> exec 'b[1-' -- true\ndcish: usage: bad node set \"b[1-\": '[' without ']'\n",
        "dcish:/> exec --stdin b1 -- cat\n\
         dcish: exec --stdin: standard input holds the commands here; use it in one-shot commands or with -f SCRIPT\n",
        "cd /archives/s1/\n",
        "dcish:/archives/s1> cd /\n",
        "nodeset --fold @active\nb[1-3]\n",
        "exec --lines s1 -- echo spare\ns1: spare\n",
        "exec --lines s1 -- echo spare\ns1: spare\n",
        "dcish:/> exit\n",
    ] {
        let at = rest
            .find(expected)
            .unwrap_or_else(|| panic!("{expected:?} not in what is left of the screen:\n{rest}"));
        rest = &rest[at + expected.len()..];
    }
    assert_eq!(status.code(), Some(1));
    let history = std::fs::read_to_string(dir.join(".dcish_history")).unwrap();
    assert!(
        history.contains("nodeset --fold @active\n") && history.contains("exit"),
        "{history}"
    );
}

/// `top` off a terminal prints one table (sorted by CPU), `--json` one array, both with every
/// selected blade and its figures in percent.
fn top_lists_every_blade_with_figures_in_range(b1: &Node) {
    // Memory is read at start, so every member carries it once its metadata went round.
    wait_until(Duration::from_secs(20), || {
        let out = b1.dcish(&["--json", "top"]);
        out.status.success() && rows(&out).iter().all(|r| r["memory"].is_u64())
    })
    .expect("some member never reported its memory use");
    let out = b1.dcish(&["--json", "top"]);
    let rows = rows(&out);
    let mut names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let cpus: Vec<i64> = rows
        .iter()
        .map(|r| r["cpu"].as_i64().unwrap_or(-1))
        .collect();
    assert!(
        cpus.windows(2).all(|w| w[0] >= w[1]),
        "not by CPU: {cpus:?}"
    );
    names.sort();
    assert_eq!(names, ["b1", "b2", "b3", "s1"]);
    for r in &rows {
        for key in ["cpu", "memory", "disk"] {
            assert!(
                r[key].is_null() || r[key].as_u64().is_some_and(|v| v <= 100),
                "{key} out of range: {r}"
            );
        }
        assert!(r["load"].is_null() || r["load"].is_u64(), "{r}");
        assert_eq!(r["state"], "alive");
        assert!(r["degraded"].is_boolean());
        let spare = r["name"] == "s1";
        assert_eq!(r["role"], if spare { "spare" } else { "active" });
        assert_eq!(r["blade"].is_null(), spare, "{r}");
    }

    // The table, once, for a set with an exclusion.
    let out = b1.dcish(&["top", "@active", "-x", "b2"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DEGRADED"),
        "{stdout}"
    );
    let mut shown: Vec<&str> = lines[1..3]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    shown.sort();
    assert_eq!(shown, ["b1", "b3"], "{stdout}");
    assert!(lines[3].starts_with("2 blades, "), "{stdout}");

    // Bad input: one line, non-zero.
    let out = b1.dcish(&["top", "--interval", "0"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("--interval"), "{stderr}");
    let out = b1.dcish(&["top", "nosuch[", "--once"]);
    assert!(!out.status.success());
}

/// `peerlets` asks every blade what it offers and runs; an instance shows once an envelope
/// started it, and an operator (b1 is in `exec_operators`) stops it; another node may not.
fn peerlets_lists_types_and_instances_and_stops_them(nodes: &[Node]) {
    let (b1, s1) = (&nodes[0], &nodes[3]);
    let instances_of = |blade: &str, app: &str| -> Vec<Value> {
        let out = b1.dcish(&["--json", "peerlets", blade]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        let rows = rows(&out);
        assert_eq!(rows.len(), 1, "{stdout}");
        rows[0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["app"] == app)
            .cloned()
            .collect()
    };

    let out = b1.dcish(&["--json", "peerlets"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let listed = rows(&out);
    let blades: Vec<&str> = listed
        .iter()
        .map(|r| r["blade"].as_str().unwrap())
        .collect();
    assert_eq!(blades, ["b1", "b2", "b3", "s1"], "{stdout}");
    for r in &listed {
        assert!(r["error"].is_null(), "{r}");
        let types = r["types"].as_array().unwrap();
        for app in ["echo", "exec", "fs", "sysinfo"] {
            assert!(types.iter().any(|t| t == app), "{app} missing: {r}");
        }
    }

    let out = b1.dcish(&["send", "b2", "--app", "echo", "<hi xmlns=\"urn:x\"/>"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let running = instances_of("b2", "echo");
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(running[0]["idle_ms"].is_u64());
    let id = running[0]["instance"].as_str().unwrap().to_owned();

    // The table says the same.
    let out = b1.dcish(&["peerlets", "b2"]);
    let (stdout, _) = text(&out);
    assert!(stdout.starts_with("BLADE  OFFERS\n"), "{stdout}");
    assert!(stdout.contains(&id), "{stdout}");

    // A node that is no operator may not stop it; b1 may.
    let out = s1.dcish(&["peerlets", "stop", "b2", "echo"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("not-authorized"), "{stderr}");
    assert_eq!(instances_of("b2", "echo").len(), 1);
    let out = b1.dcish(&["peerlets", "stop", "b2", "echo", "--instance", &id]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "stopped 1 echo instance(s) on b2\n");
    assert!(instances_of("b2", "echo").is_empty());

    let out = b1.dcish(&["peerlets", "stop", "b2", "echo", "--instance", "nope"]);
    assert!(!out.status.success());
}
