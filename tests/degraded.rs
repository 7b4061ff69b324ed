//! Fail-over condition (3), sustained degradation, with real agents on loopback: by policy the
//! degraded holder hands its blade over to a spare, or gets a helper that answers the blade's
//! read-only envelopes until the holder recovers. The holder's load is real configuration: it
//! watches its disk use with a high mark of 0%, so any reading counts as high; its recovery is
//! the operator raising the marks and sending SIGHUP. Every wait is a poll with a bounded
//! deadline; nothing asserts on how long a step took.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{free_port, wait_until, Node};
use serde_json::Value;

/// Writes `b1`'s config: its disk watched with the given marks, 1 s windows, and the policy.
fn holder_config(path: &Path, high: u8, low: u8, policy: &str) -> PathBuf {
    fs::write(
        path,
        format!(
            "[degradation]\nmetrics = [\"disk\"]\nhigh_pct = {high}\nlow_pct = {low}\n\
             raise_after_s = 1\nclear_after_s = 1\nsample_interval_ms = 200\n\n\
             [failover]\non_degraded = \"{policy}\"\n"
        ),
    )
    .unwrap();
    path.into()
}

/// `b1` (with `config`), `b2` and a spare, once all three are alive and b1 is seated; and b1's
/// seat epoch.
fn mesh(root: &Path, config: &Path) -> (Node, Node, Node, u64) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let b1 = Node::start(
        root,
        "b1",
        ports[0],
        &[],
        &["--config", config.to_str().unwrap()],
    );
    let b2 = Node::start(root, "b2", ports[1], &[ports[0]], &[]);
    let spare = Node::start(root, "spare", ports[2], &[ports[0]], &["--role", "spare"]);
    let b1_id = b1.id();
    let seated = wait_until(Duration::from_secs(60), || {
        [&b1, &b2, &spare].iter().all(|n| {
            seat(n, "b1").is_some_and(|s| s["holder"] == b1_id.as_str()) && n.sees_alive(3)
        })
    });
    assert!(seated.is_some(), "b1 was not seated: {:?}", seat(&b2, "b1"));
    let epoch = seat(&b2, "b1").and_then(|s| s["epoch"].as_u64()).unwrap();
    (b1, b2, spare, epoch)
}

fn seat(node: &Node, blade: &str) -> Option<Value> {
    let out = node.dcish(&["--json", "seats"]);
    let seats: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    seats.into_iter().find(|s| s["blade"] == blade)
}

/// The helpers `node` shows for `blade`: node ids.
fn helpers(node: &Node, blade: &str) -> Vec<String> {
    seat(node, blade)
        .and_then(|s| {
            s["helpers"].as_array().map(|a| {
                a.iter()
                    .filter_map(|h| h["node"].as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The node that answered one `dcish send blade:BLADE --app APP PAYLOAD` asked on `from`.
fn answered_by(from: &Node, blade: &str, app: &str, payload: &str) -> Option<String> {
    let out = from.dcish(&[
        "--json",
        "send",
        &format!("blade:{blade}"),
        "--app",
        app,
        payload,
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let answers = v["answers"].as_array()?;
    match &answers[..] {
        [a] if a["kind"] != "error" => a["node"].as_str().map(String::from),
        _ => None,
    }
}

const WHOAMI: &str = r#"<whoami xmlns="urn:dci:echo:1"/>"#;
const SAY: &str = r#"<say xmlns="urn:dci:chat:1" from="test">a line</say>"#;

fn counter(node: &Node, name: &str) -> Option<u64> {
    let out = node.dcish(&["--json", "status"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["counters"][name].as_u64()
}

/// Also: the helper restores the blade's latest archive into its `blades/b1`, and the holder's
/// next archive over it.
#[test]
fn a_degraded_holder_gets_a_helper_for_read_only_envelopes_and_releases_it_on_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("b1-data");
    fs::create_dir_all(data.join("docs")).unwrap();
    fs::write(data.join("docs/a.md"), b"alpha\n").unwrap();
    fs::write(data.join("big.bin"), vec![7u8; 200_000]).unwrap();
    let config = holder_config(&tmp.path().join("b1.toml"), 0, 0, "none");
    fs::write(
        &config,
        format!(
            "{}\n[backup]\nroot = \"{}\"\n",
            fs::read_to_string(&config).unwrap(),
            data.display()
        ),
    )
    .unwrap();
    let (b1, b2, spare, epoch) = mesh(tmp.path(), &config);
    let (b1_id, spare_id) = (b1.id(), spare.id());
    let out = b1.dcish(&["backup", "now"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("complete"),
        "{out:?}"
    );
    // Degraded (any disk reading is above 0%) with no policy: nothing but the flag.
    let degraded = wait_until(Duration::from_secs(30), || {
        b2.members()
            .is_some_and(|m| m.iter().any(|m| m["name"] == "b1" && m["degraded"] == true))
    });
    assert!(degraded.is_some(), "{:?}", b2.members());
    assert!(helpers(&b2, "b1").is_empty());
    let with_root = fs::read_to_string(&config).unwrap();
    fs::write(&config, with_root.replace("\"none\"", "\"helper\"")).unwrap();
    b1.signal(libc::SIGHUP);

    // Degraded (any disk reading is above 0%): the spare restores b1 and is announced.
    let helped = wait_until(Duration::from_secs(60), || {
        helpers(&b2, "b1") == [spare_id.clone()] && counter(&spare, "failover-helping") == Some(1)
    });
    assert!(
        helped.is_some(),
        "no helper: {:?}\n{}",
        seat(&b2, "b1"),
        b1.log_text()
    );

    let copy = spare.data_dir.join("blades/b1");
    for f in ["docs/a.md", "big.bin"] {
        assert_eq!(
            fs::read(copy.join(f)).ok(),
            fs::read(data.join(f)).ok(),
            "{f}"
        );
    }

    // The holder writes and backs up again: the helper's copy follows the new archive.
    fs::write(data.join("docs/b.md"), b"written after the helper came\n").unwrap();
    let out = b1.dcish(&["backup", "now"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("complete"),
        "{out:?}"
    );
    let refreshed = wait_until(Duration::from_secs(30), || {
        fs::read(copy.join("docs/b.md")).ok().as_deref()
            == Some(&b"written after the helper came\n"[..])
    });
    assert!(
        refreshed.is_some(),
        "the copy stayed old:\n{}",
        spare.log_text()
    );

    // Read-only envelopes for b1 are spread over the holder and the helper...
    let mut seen = std::collections::BTreeSet::new();
    let both = wait_until(Duration::from_secs(30), || {
        seen.extend(answered_by(&b2, "b1", "echo", WHOAMI));
        seen.contains(&b1_id) && seen.contains(&spare_id)
    });
    assert!(both.is_some(), "whoami answered by {seen:?} only");
    // ...while a write (a chat line: chat declares nothing read-only) stays with the holder.
    for _ in 0..12 {
        assert_eq!(
            answered_by(&b2, "b1", "chat", SAY).as_deref(),
            Some(b1_id.as_str())
        );
    }

    // The operator raises the marks: any reading is below 100%, so b1 recovers and releases.
    let recovering = with_root
        .replace("\"none\"", "\"helper\"")
        .replace("high_pct = 0", "high_pct = 100")
        .replace("low_pct = 0", "low_pct = 100");
    fs::write(&config, recovering).unwrap();
    b1.signal(libc::SIGHUP);
    let released = wait_until(Duration::from_secs(30), || {
        helpers(&b2, "b1").is_empty() && counter(&spare, "failover-helping") == Some(0)
    });
    assert!(
        released.is_some(),
        "still helped: {:?}\n{}",
        seat(&b2, "b1"),
        b1.log_text()
    );
    // Both changes reached every member as failure notices.
    let noticed = wait_until(Duration::from_secs(10), || {
        let log = b2.log_text();
        log.contains("failure notice: spare") && log.contains("no longer helps blade b1")
    });
    assert!(noticed.is_some(), "{}", b2.log_text());
    // The seat never moved, and every envelope for b1 is the holder's again.
    assert_eq!(seat(&b2, "b1").unwrap()["epoch"], epoch);
    let only_holder = wait_until(Duration::from_secs(10), || {
        (0..8).all(|_| answered_by(&b2, "b1", "echo", WHOAMI).as_deref() == Some(&b1_id))
    });
    assert!(only_holder.is_some());
}

/// Also: the policy is changed while the agent runs (SIGHUP), and a degraded node that holds no
/// blade (b1, once moved) does nothing more.
#[test]
fn a_degraded_holder_with_the_move_policy_hands_its_blade_to_the_spare() {
    let tmp = tempfile::tempdir().unwrap();
    let config = holder_config(&tmp.path().join("b1.toml"), 0, 0, "none");
    let (b1, b2, spare, epoch) = mesh(tmp.path(), &config);
    let spare_id = spare.id();
    let degraded = wait_until(Duration::from_secs(30), || {
        b2.members()
            .is_some_and(|m| m.iter().any(|m| m["name"] == "b1" && m["degraded"] == true))
    });
    assert!(degraded.is_some(), "{:?}", b2.members());
    assert_eq!(seat(&b2, "b1").unwrap()["epoch"], epoch, "policy none");
    holder_config(&config, 0, 0, "move");
    b1.signal(libc::SIGHUP);
    for n in [&b1, &b2, &spare] {
        let moved = wait_until(Duration::from_secs(60), || {
            seat(n, "b1").is_some_and(|s| {
                s["holder"] == spare_id.as_str() && s["epoch"] == epoch + 1 && s["state"] == "held"
            })
        });
        assert!(
            moved.is_some(),
            "{}: {:?}\n{}",
            n.name,
            seat(n, "b1"),
            b1.log_text()
        );
    }
    let answered = wait_until(Duration::from_secs(30), || {
        answered_by(&b2, "b1", "chat", SAY).as_deref() == Some(spare_id.as_str())
    });
    assert!(answered.is_some());
    assert_eq!(seat(&b2, "b1").unwrap()["epoch"], epoch + 1);
}
