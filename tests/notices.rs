//! Failure notices, events, degradation and the heartbeat status table, with real agents on
//! loopback.

mod common;

use std::time::Duration;

use common::{free_port, wait_until, Node};
use serde_json::Value;

fn events(node: &Node) -> Vec<Value> {
    let out = node.dcish(&["--json", "events"]);
    assert!(out.status.success(), "events failed: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn has_event(node: &Node, name: &str, kind: &str) -> bool {
    events(node)
        .iter()
        .any(|e| e["name"] == name && e["event"] == kind)
}

/// A node that stays over its (tiny) memory mark raises `degraded`, which the others see in its
/// metadata and a `moderate` notice. A disk fault is a `serious` notice, paged. A crash: every
/// survivor logs one `system-down` notice for it, the one configured to page runs its command
/// once, and the `dead` event is in every survivor's event list.
#[test]
fn a_crash_and_a_degradation_reach_every_survivor_as_notices_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    let paged = tmp.path().join("paged.txt");
    let pager = tmp.path().join("pager.toml");
    std::fs::write(
        &pager,
        format!(
            "[notices]\npage_command = [\"sh\", \"-c\", \"echo $DCI_NOTICE_LEVEL $DCI_NOTICE_PART $DCI_NOTICE_NAME >> {}\"]\n",
            paged.display()
        ),
    )
    .unwrap();
    let hot = tmp.path().join("hot.toml");
    // Memory use is always above 1%: this node degrades after one second.
    std::fs::write(
        &hot,
        "[degradation]\nmetrics = [\"memory\"]\nhigh_pct = 1\nlow_pct = 0\nraise_after_s = 1\nsample_interval_ms = 200\n",
    )
    .unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let start = |i: usize, extra: &[&str]| {
        let seeds: Vec<u16> = if i == 0 { vec![] } else { vec![ports[0]] };
        Node::start(tmp.path(), &format!("v{}", i + 1), ports[i], &seeds, extra)
    };
    let v1 = start(0, &["--config", pager.to_str().unwrap()]);
    let v2 = start(1, &[]);
    let v3 = start(2, &["--config", hot.to_str().unwrap()]);
    let v4 = start(3, &[]);
    let survivors = [&v1, &v2, &v3];
    let converged = wait_until(Duration::from_secs(30), || {
        [&v1, &v2, &v3, &v4].iter().all(|n| n.sees_alive(4))
    });
    assert!(converged.is_some(), "no convergence: {:?}", v1.members());

    // The heartbeat status table: both channels for every other member.
    let members = v1.members().unwrap();
    let v2_row = members.iter().find(|m| m["name"] == "v2").unwrap();
    let channels: Vec<&str> = v2_row["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["probe", "relay"]);
    assert!(v2_row["resources"]["memory"].as_u64().is_some());
    let status = v1.dcish(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("Heartbeat status"),
        "{text}"
    );
    let detail = v1.dcish(&["nodes", "--detail"]);
    assert!(String::from_utf8_lossy(&detail.stdout).contains("DEGRADED"));

    // Degradation of v3: its own event, then the others see it.
    let degraded = wait_until(Duration::from_secs(20), || {
        survivors.iter().all(|n| has_event(n, "v3", "degraded"))
    });
    assert!(
        degraded.is_some(),
        "v3 degraded not seen: {:?}",
        events(&v1)
    );
    let v3_row = v1.members().unwrap();
    assert!(v3_row
        .iter()
        .any(|m| m["name"] == "v3" && m["degraded"] == true));
    let moderate = wait_until(Duration::from_secs(10), || {
        [&v1, &v2].iter().all(|n| {
            n.log_text()
                .lines()
                .any(|l| l.contains("failure notice") && l.contains("moderate") && l.contains("v3"))
        })
    });
    assert!(
        moderate.is_some(),
        "no moderate notice in logs:\n{}",
        v1.log_text()
    );

    // A disk fault on v2: its health-check file cannot be replaced (a non-empty directory took
    // its place, which stops root too). A serious notice: logged everywhere, and paged.
    let check = v2.data_dir.join("health-check");
    let blocked = wait_until(Duration::from_secs(5), || {
        let _ = std::fs::remove_file(&check);
        std::fs::create_dir_all(check.join("x")).is_ok()
    });
    assert!(blocked.is_some(), "cannot block {}", check.display());
    let disk = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&paged).is_ok_and(|t| t.contains("serious disk v2"))
    });
    assert!(disk.is_some(), "no disk notice paged:\n{}", v2.log_text());
    assert!(v3.log_text().lines().any(|l| l.contains("failure notice")
        && l.contains("serious")
        && l.contains("cannot be written")));

    // Crash of v4.
    v4.signal(libc::SIGKILL);
    let noticed = wait_until(Duration::from_secs(20), || {
        survivors.iter().all(|n| {
            n.log_text().lines().any(|l| {
                l.contains("failure notice") && l.contains("system-down") && l.contains("v4")
            })
        })
    });
    assert!(
        noticed.is_some(),
        "not every survivor logged the notice:\n{}\n{}\n{}",
        v1.log_text(),
        v2.log_text(),
        v3.log_text()
    );
    let pages = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&paged).is_ok_and(|t| t.contains("system-down node v4"))
    });
    assert!(
        pages.is_some(),
        "the paging command did not run:\n{}",
        v1.log_text()
    );
    // Logged and paged once, however many survivors declared it.
    std::thread::sleep(Duration::from_secs(1));
    let text = std::fs::read_to_string(&paged).unwrap();
    assert_eq!(text.matches("system-down node v4").count(), 1, "{text}");
    let logged = v2
        .log_text()
        .lines()
        // The system-down notice only: with no spare, v4's blade also gets a (serious) notice
        // that it stays down.
        .filter(|l| l.contains("failure notice") && l.contains("system-down") && l.contains("v4"))
        .count();
    assert_eq!(logged, 1, "{}", v2.log_text());
    for n in survivors {
        assert!(has_event(n, "v4", "dead"), "{}: {:?}", n.name, events(n));
        assert!(has_event(n, "v4", "joined"));
    }
}
