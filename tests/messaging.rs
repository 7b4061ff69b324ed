//! Envelopes between peerlets on real agents: three `dcid` processes on loopback, driven through
//! `dcish send`, `log` and `replay`. Every envelope the agents log (they log everything here)
//! is validated against `proto/dci.xsd` with xmllint when it is on PATH.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{all_see_alive, free_port, wait_until, Node};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Three agents b1, b2, b3, logging every envelope, with group `web` = b1 and b3, the
/// repository's external peerlets, and b1's operator allowed to use `exec`.
fn mesh(root: &Path) -> Vec<Node> {
    mesh_with(root, "")
}

/// [`mesh`], with more config sections after the messaging ones.
fn mesh_with(root: &Path, more_config: &str) -> Vec<Node> {
    let config = root.join("dcid.toml");
    std::fs::write(
        &config,
        format!(
            "[messaging]\nlog_apps = [\"*\"]\nexec_operators = [\"b1\"]\nexec_timeout_ms = 2000\npeerlet_dirs = [{:?}]\n[messaging.groups]\nweb = [\"b1\", \"b3\"]\n{more_config}",
            repo().join("peerlets")
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let first = free_port();
    let mut nodes = vec![Node::start(root, "b1", first, &[], &["--config", cfg])];
    for name in ["b2", "b3"] {
        nodes.push(Node::start(
            root,
            name,
            free_port(),
            &[first],
            &["--config", cfg],
        ));
    }
    all_see_alive(&nodes, 3);
    nodes
}

/// `dcish --json send ...` from `node`: (success, the parsed output).
fn send(node: &Node, args: &[&str]) -> (bool, Value) {
    let mut full = vec!["--json", "send"];
    full.extend_from_slice(args);
    let out = node.dcish(&full);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() && v.is_null() {
        return (
            false,
            Value::String(String::from_utf8_lossy(&out.stderr).into_owned()),
        );
    }
    (out.status.success(), v)
}

fn answers(v: &Value) -> Vec<Value> {
    v["answers"].as_array().cloned().unwrap_or_default()
}

/// What `echo`'s `<count/>` says instance `instance` on `blade` had received.
fn count(from: &Node, blade: &str, instance: &str) -> u64 {
    let (ok, v) = send(
        from,
        &[
            blade,
            "--instance",
            instance,
            r#"<count xmlns="urn:dci:echo:1"/>"#,
        ],
    );
    assert!(ok, "count on {blade}: {v}");
    let payload = answers(&v)[0]["payload"].as_str().unwrap().to_string();
    let n = payload
        .split("received=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    n.parse().unwrap()
}

/// Every logged envelope of every node validates against the schema.
fn logged_envelopes_validate(nodes: &[Node]) {
    let schema = repo().join("proto/dci.xsd");
    let have_xmllint = Command::new("xmllint").arg("--version").output().is_ok();
    let mut checked = 0;
    for n in nodes {
        let out = n.dcish(&["--json", "log", "--limit", "10000"]);
        assert!(out.status.success(), "log on {}: {out:?}", n.name);
        let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if !have_xmllint {
            continue;
        }
        for r in records {
            let xml = r["xml"].as_str().unwrap();
            let mut child = Command::new("xmllint")
                .args(["--noout", "--schema"])
                .arg(&schema)
                .arg("-")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(xml.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{} logged an envelope the schema refuses:\n{xml}\n{}",
                n.name,
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    if !have_xmllint {
        eprintln!("note: xmllint is not on PATH, so schema checks are skipped");
    } else {
        assert!(checked > 0, "nothing was logged");
    }
}

#[test]
fn unicast_multicast_and_broadcast_reach_exactly_the_intended_peerlets_once() {
    let root = tempfile::tempdir().unwrap();
    let nodes = mesh(root.path());
    let b1 = &nodes[0];

    // Unicast by blade name: the answer comes from b2, and only from b2.
    let (ok, v) = send(b1, &["b2", r#"<whoami xmlns="urn:dci:echo:1"/>"#]);
    assert!(ok, "{v}");
    let a = answers(&v);
    assert_eq!(a.len(), 1, "{v}");
    assert_eq!(a[0]["blade"], "b2");
    assert!(a[0]["payload"].as_str().unwrap().contains("blade=\"b2\""));

    // A peerlet reads the directory of online members, its own node first.
    let (ok, v) = send(b1, &["b3", r#"<members xmlns="urn:dci:echo:1"/>"#]);
    assert!(ok, "{v}");
    let p = answers(&v)[0]["payload"].as_str().unwrap().to_string();
    assert_eq!(p.matches("<member ").count(), 3, "{p}");
    assert!(
        p.find("blade=\"b3\" local=\"true\"") < p.find("local=\"false\""),
        "{p}"
    );

    // Multicast to group web (b1 and b3): one copy each, none to b2.
    let g = uuid::Uuid::new_v4().to_string();
    let (ok, v) = send(
        b1,
        &[
            "group:web",
            "--event",
            "--instance",
            &g,
            r#"<ping xmlns="urn:t:1"/>"#,
        ],
    );
    assert!(ok, "{v}");
    // Broadcast: every member once.
    let all = uuid::Uuid::new_v4().to_string();
    let (ok, v) = send(
        &nodes[1],
        &[
            "broadcast",
            "--event",
            "--instance",
            &all,
            r#"<ping xmlns="urn:t:1"/>"#,
        ],
    );
    assert!(ok, "{v}");
    let expected = [("b1", 1, 1), ("b2", 0, 1), ("b3", 1, 1)];
    let arrived = || {
        expected
            .iter()
            .all(|(b, g_n, all_n)| count(b1, b, &g) == *g_n && count(b1, b, &all) == *all_n)
    };
    assert!(
        wait_until(Duration::from_secs(10), arrived).is_some(),
        "copies never all arrived"
    );
    // And no late duplicate shows up.
    std::thread::sleep(Duration::from_millis(200));
    for (blade, group_copies) in [("b1", 1), ("b2", 0), ("b3", 1)] {
        assert_eq!(
            count(b1, blade, &g),
            group_copies,
            "group copies on {blade}"
        );
        assert_eq!(count(b1, blade, &all), 1, "broadcast copies on {blade}");
    }

    // A multicast request is answered once by each member of the group.
    let (ok, v) = send(b1, &["group:web", r#"<x xmlns="urn:t:1">hi</x>"#]);
    assert!(ok, "{v}");
    let mut from: Vec<String> = answers(&v)
        .iter()
        .map(|a| a["blade"].as_str().unwrap().to_string())
        .collect();
    from.sort();
    assert_eq!(from, ["b1", "b3"]);

    // A literal node set, and errors for what does not exist.
    let (ok, v) = send(b1, &["group:set:b2,b3", r#"<x xmlns="urn:t:1"/>"#]);
    assert!(ok, "{v}");
    assert_eq!(answers(&v).len(), 2);
    let (ok, v) = send(b1, &["nosuch", r#"<x xmlns="urn:t:1"/>"#]);
    assert!(!ok);
    assert_eq!(answers(&v)[0]["code"], "unknown-blade", "{v}");
    let (ok, v) = send(b1, &["b3", "--app", "nosuchapp", r#"<x xmlns="urn:t:1"/>"#]);
    assert!(!ok);
    assert_eq!(answers(&v)[0]["code"], "unknown-app", "{v}");

    logged_envelopes_validate(&nodes);
}

#[test]
fn an_envelope_written_to_a_frozen_peer_is_answered_unreachable_before_its_sender_gives_up() {
    let root = tempfile::tempdir().unwrap();
    // Suspicion of at least 8.4 s: the frozen b3 stays a member the router sends to for longer
    // than the sender waits (5 s), so only the missing receipt can tell the sender anything.
    let nodes = mesh_with(root.path(), "[membership]\nsuspicion_mult = 60\n");
    let (b1, b3) = (&nodes[0], &nodes[2]);
    let whoami = r#"<whoami xmlns="urn:dci:echo:1"/>"#;
    // A first exchange opens b1's envelope stream to b3.
    let (ok, v) = send(b1, &["b3", whoami]);
    assert!(ok, "{v}");

    b3.signal(libc::SIGSTOP);
    let (ok, v) = send(b1, &["b3", whoami]);
    b3.signal(libc::SIGCONT);
    assert!(!ok, "{v}");
    let answer = &answers(&v)[0];
    assert_eq!(answer["code"], "unreachable", "{v}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("may or may not have arrived"),
        "{v}"
    );
    let out = b1.dcish(&["--json", "status"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["counters"]["envelopes-unconfirmed"], 1, "{status}");

    // Thawed, b3 answers again over a new stream.
    assert!(wait_until(Duration::from_secs(20), || send(b1, &["b3", whoami]).0).is_some());
}

#[test]
fn ttl_expires_on_the_way_and_is_clamped_to_nine_on_receipt() {
    let root = tempfile::tempdir().unwrap();
    let nodes = mesh(root.path());
    let b1 = &nodes[0];
    let whoami = r#"<whoami xmlns="urn:dci:echo:1"/>"#;

    // One hop left at b1 cannot pay for the hop to b2.
    let (ok, v) = send(b1, &["b2", "--ttl", "1", whoami]);
    assert!(!ok);
    assert_eq!(answers(&v)[0]["code"], "expired", "{v}");
    // Zero never leaves.
    let (ok, v) = send(b1, &["b1", "--ttl", "0", whoami]);
    assert!(!ok);
    assert_eq!(answers(&v)[0]["code"], "expired", "{v}");
    // Two hops reach b2 with one left.
    let (ok, v) = send(b1, &["b2", "--ttl", "2", whoami]);
    assert!(ok, "{v}");
    assert!(
        answers(&v)[0]["payload"]
            .as_str()
            .unwrap()
            .contains("ttl=\"1\""),
        "{v}"
    );
    // 200 is clamped to 9 at b1, and b2 receives 8.
    let (ok, v) = send(b1, &["b2", "--ttl", "200", whoami]);
    assert!(ok, "{v}");
    assert!(
        answers(&v)[0]["payload"]
            .as_str()
            .unwrap()
            .contains("ttl=\"8\""),
        "{v}"
    );

    let out = b1.dcish(&["--json", "status"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let clamped = status["counters"]["envelopes-ttl-clamped"].as_u64();
    assert!(clamped >= Some(1), "{status}");
    logged_envelopes_validate(&nodes);
}

#[test]
fn chat_sessions_stay_separate_and_external_peerlets_start_on_demand_and_answer() {
    let root = tempfile::tempdir().unwrap();
    let nodes = mesh(root.path());
    let (b1, b3) = (&nodes[0], &nodes[2]);
    let (s1, s2) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let say =
        |who: &str, text: &str| format!(r#"<say xmlns="urn:dci:chat:1" from="{who}">{text}</say>"#);
    // Session 1: b1 and b2; session 2: b1, b2 and b3, at the same time.
    let (ok, v) = send(
        b1,
        &[
            "group:set:b1,b2",
            "--app",
            "chat",
            "--instance",
            &s1,
            &say("ann", "one"),
        ],
    );
    assert!(ok, "{v}");
    let (ok, v) = send(
        b3,
        &[
            "broadcast",
            "--app",
            "chat",
            "--instance",
            &s2,
            &say("cid", "two"),
        ],
    );
    assert!(ok, "{v}");
    let (ok, v) = send(
        b1,
        &[
            "group:set:b1,b2",
            "--app",
            "chat",
            "--instance",
            &s1,
            &say("bob", "three"),
        ],
    );
    assert!(ok, "{v}");
    let history = |from: &Node, blade: &str, s: &str| {
        let (ok, v) = send(
            from,
            &[
                blade,
                "--app",
                "chat",
                "--instance",
                s,
                r#"<history xmlns="urn:dci:chat:1"/>"#,
            ],
        );
        assert!(ok, "{v}");
        answers(&v)[0]["payload"].as_str().unwrap().to_string()
    };
    let h = history(b3, "b2", &s1);
    assert!(
        h.contains(">one<") && h.contains(">three<") && !h.contains(">two<"),
        "{h}"
    );
    let h = history(b1, "b2", &s2);
    assert!(h.contains(">two<") && !h.contains(">one<"), "{h}");
    let h = history(b1, "b3", &s1);
    assert!(!h.contains("line"), "b3 never took part in session 1: {h}");

    // The Python peerlet is not running until this envelope arrives; it waits in the queue
    // while the process starts, and is answered.
    let (ok, v) = send(
        b1,
        &[
            "b3",
            "--app",
            "upper",
            r#"<text xmlns="urn:t:1">hello mesh</text>"#,
        ],
    );
    assert!(ok, "{v}");
    let a = answers(&v);
    assert_eq!(a[0]["blade"], "b3");
    assert_eq!(a[0]["app"], "upper");
    assert!(
        a[0]["payload"].as_str().unwrap().contains("HELLO MESH"),
        "{v}"
    );

    // A manifest that wraps an unmodified program: payload fields become its arguments.
    let (ok, v) = send(
        b1,
        &[
            "b2",
            "--app",
            "uname",
            r#"<args xmlns="urn:dci:wrap:1"><arg>-s</arg></args>"#,
        ],
    );
    assert!(ok, "{v}");
    let p = answers(&v)[0]["payload"].as_str().unwrap().to_string();
    assert!(
        p.contains("<stdout>Linux\n</stdout>") && p.contains("exit=\"0\""),
        "{p}"
    );
    logged_envelopes_validate(&nodes);
}

#[test]
fn a_logged_exchange_is_replayed_to_another_blade_with_a_new_id_and_a_link() {
    let root = tempfile::tempdir().unwrap();
    let nodes = mesh(root.path());
    let (b1, b3) = (&nodes[0], &nodes[2]);
    let (ok, v) = send(b1, &["b2", r#"<note xmlns="urn:t:1">keep me</note>"#]);
    assert!(ok, "{v}");
    let original = v["id"].as_str().unwrap().to_string();
    let out = b1.dcish(&["--json", "log", "--target", "b2", "--app", "echo"]);
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        records.iter().any(|r| r["id"] == original.as_str()),
        "{records:?}"
    );

    let out = b1.dcish(&["--json", "replay", &original, "--to", "b3"]);
    assert!(out.status.success(), "{out:?}");
    let copies: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let copy = copies[0]["id"].as_str().unwrap().to_string();
    assert_ne!(copy, original);
    assert_eq!(copies[0]["replay_of"], original.as_str());
    // The copy's answer comes back to the operator, from b3.
    let answer = &copies[0]["answers"][0];
    assert_eq!(answer["blade"], "b3", "{copies:?}");
    assert!(answer["payload"].as_str().unwrap().contains("keep me"));

    // b3 received the copy, payload intact.
    wait_until(Duration::from_secs(5), || {
        let out = b3.dcish(&["--json", "log", "--app", "echo"]);
        let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        records.iter().any(|r| {
            r["id"] == copy.as_str()
                && r["dir"] == "in"
                && r["xml"].as_str().unwrap().contains("keep me")
        })
    })
    .expect("b3 never logged the replayed envelope");
    // b1's log links the copy to the original.
    let out = b1.dcish(&["--json", "log", "--target", "b3"]);
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["id"] == copy.as_str() && r["replay_of"] == original.as_str()),
        "{records:?}"
    );
    logged_envelopes_validate(&nodes);
}

#[test]
fn exec_answers_authorized_operators_only_and_a_task_chains_steps_across_blades() {
    let root = tempfile::tempdir().unwrap();
    let nodes = mesh(root.path());
    let (b1, b3) = (&nodes[0], &nodes[2]);
    let echo_hi = r#"<exec xmlns="urn:dci:exec:1"><arg>echo</arg><arg>hi</arg></exec>"#;
    let (ok, v) = send(b1, &["b2", "--app", "exec", echo_hi]);
    assert!(ok, "{v}");
    let p = answers(&v)[0]["payload"].as_str().unwrap().to_string();
    assert!(
        p.contains("exit=\"0\"") && p.contains("<stdout>hi\n</stdout>"),
        "{p}"
    );
    // b3's operator is not in the list.
    let (ok, v) = send(b3, &["b2", "--app", "exec", echo_hi]);
    assert!(!ok);
    assert_eq!(answers(&v)[0]["code"], "not-authorized", "{v}");
    // A command past the time limit is killed.
    let (ok, v) = send(
        b1,
        &[
            "b2",
            "--app",
            "exec",
            r#"<exec xmlns="urn:dci:exec:1" timeout-ms="200"><arg>sleep</arg><arg>5</arg></exec>"#,
        ],
    );
    assert!(ok, "{v}");
    assert!(
        answers(&v)[0]["payload"]
            .as_str()
            .unwrap()
            .contains("timed-out=\"true\""),
        "{v}"
    );
    // sysinfo with a limit every host passes raises an alert.
    let (ok, v) = send(
        b1,
        &[
            "b3",
            "--app",
            "sysinfo",
            r#"<get xmlns="urn:dci:sysinfo:1" memory-pct="0"/>"#,
        ],
    );
    assert!(ok, "{v}");
    assert!(
        answers(&v)[0]["payload"]
            .as_str()
            .unwrap()
            .contains("metric=\"memory-pct\""),
        "{v}"
    );

    // b2 fetches, b1 combines (the Python peerlet), b3 stores in a chat session.
    let session = uuid::Uuid::new_v4().to_string();
    let task = root.path().join("task.xml");
    std::fs::write(
        &task,
        format!(
            r#"<task xmlns="urn:dci:task:1">
  <step id="fetch" to="b2" app="exec"><payload><exec xmlns="urn:dci:exec:1"><arg>echo</arg><arg>page from b2</arg></exec></payload></step>
  <step id="combine" to="b1" app="upper"><payload><text xmlns="urn:t:1">notes and {{{{fetch}}}}</text></payload></step>
  <step id="store" to="b3" app="chat" instance="{session}"><payload><say xmlns="urn:dci:chat:1" from="task">{{{{combine}}}}</say></payload></step>
</task>"#
        ),
    )
    .unwrap();
    let out = b1.dcish(&["run", task.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("step combine (upper on b1): NOTES AND PAGE FROM B2"),
        "{text}"
    );
    let (ok, v) = send(
        b1,
        &[
            "b3",
            "--app",
            "chat",
            "--instance",
            &session,
            r#"<history xmlns="urn:dci:chat:1"/>"#,
        ],
    );
    assert!(ok, "{v}");
    assert!(
        answers(&v)[0]["payload"]
            .as_str()
            .unwrap()
            .contains("NOTES AND PAGE FROM B2"),
        "{v}"
    );
    // A broken task says which step failed.
    std::fs::write(
        &task,
        r#"<task xmlns="urn:dci:task:1"><step id="only" to="nosuch" app="echo"/></task>"#,
    )
    .unwrap();
    let out = b1.dcish(&["run", task.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("step only failed"));
    logged_envelopes_validate(&nodes);
}
