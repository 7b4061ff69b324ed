//! The mesh with real agents on loopback: discovery through seeds and gossip, admission by cluster
//! key, graceful leave, and identity across restarts.

mod common;

use std::time::Duration;

use common::{free_port, keygen, wait_until, Node};

fn all_alive(node: &Node, names: &[&str]) -> bool {
    node.members().is_some_and(|members| {
        names.iter().all(|n| {
            members
                .iter()
                .any(|m| m["name"] == *n && m["state"] == "alive")
        })
    })
}

#[test]
fn three_agents_find_each_other_a_stranger_is_refused_and_a_leaver_shows_left() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "cluster.key");
    let other_key = keygen(tmp.path(), "other.key");
    let key_flag = ["--cluster-key", key.to_str().unwrap()];
    let (p1, p2, p3) = (free_port(), free_port(), free_port());

    // Only the first two are given a seed: n1 knows n2, n2 knows n3. n1 and n3 must meet through
    // gossip, and n3 must learn of n1 without being told any address.
    let n3 = Node::start(tmp.path(), "n3", p3, &[], &key_flag);
    let n2 = Node::start(tmp.path(), "n2", p2, &[p3], &key_flag);
    let n1 = Node::start(tmp.path(), "n1", p1, &[p2], &key_flag);
    let names = ["n1", "n2", "n3"];
    let took = wait_until(Duration::from_secs(30), || {
        [&n1, &n2, &n3].iter().all(|n| all_alive(n, &names))
    });
    let took = took.unwrap_or_else(|| {
        panic!(
            "the mesh did not converge:\nn1: {:?}\nn1 log:\n{}",
            n1.members(),
            n1.log_text()
        )
    });
    eprintln!("3 agents converged in {took:?}");
    for n in [&n1, &n2, &n3] {
        assert_eq!(
            n.members().unwrap().len(),
            3,
            "{} sees extra members",
            n.name
        );
    }

    // A node with another key dials a member: refused, and never listed anywhere.
    let stranger = Node::start(
        tmp.path(),
        "stranger",
        free_port(),
        &[p1],
        &["--cluster-key", other_key.to_str().unwrap()],
    );
    let refused = wait_until(Duration::from_secs(15), || {
        n1.log_text().contains("refused connection")
    });
    assert!(
        refused.is_some(),
        "n1 did not log the refusal:\n{}",
        n1.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    for n in [&n1, &n2, &n3] {
        let members = n.members().unwrap();
        assert!(
            members.iter().all(|m| m["name"] != "stranger"),
            "{} lists the stranger: {members:?}",
            n.name
        );
    }
    let seen_by_stranger = stranger.members().unwrap();
    assert_eq!(
        seen_by_stranger.len(),
        1,
        "the stranger sees: {seen_by_stranger:?}"
    );

    // SIGTERM: the others see n2 as left (not dead).
    let sock = n2.socket();
    let status = n2.terminate();
    assert!(status.success(), "n2 exited with {status}");
    assert!(!sock.exists(), "n2 left its control socket behind");
    for n in [&n1, &n3] {
        let took = wait_until(Duration::from_secs(10), || {
            n.state_of("n2").as_deref() == Some("left")
        });
        let took = took.unwrap_or_else(|| panic!("{} shows n2 as {:?}", n.name, n.state_of("n2")));
        eprintln!("{} saw n2 leave after {took:?}", n.name);
    }
}

/// Regression: a node whose seed was not up yet stopped retrying it once any other peer connected,
/// leaving two islands that never met (seen in compose: blade-3 started before blade-1).
#[test]
fn a_seed_that_starts_late_is_still_joined() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let b = Node::start(tmp.path(), "late-b", pb, &[pa], &[]);
    let c = Node::start(tmp.path(), "late-c", pc, &[pb], &[]);
    assert!(wait_until(Duration::from_secs(20), || all_alive(
        &b,
        &["late-b", "late-c"]
    ))
    .is_some());
    let a = Node::start(tmp.path(), "late-a", pa, &[], &[]);
    let names = ["late-a", "late-b", "late-c"];
    let took = wait_until(Duration::from_secs(60), || {
        [&a, &b, &c].iter().all(|n| all_alive(n, &names))
    });
    assert!(
        took.is_some(),
        "islands never merged: a sees {:?}",
        a.members()
    );
}

#[test]
fn an_agent_keeps_its_identity_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = Node::start(tmp.path(), "solo", port, &[], &[]);
    let id = first.id();
    assert!(id.starts_with("12D3KooW"), "not an ed25519 peer id: {id}");
    assert!(first.terminate().success());
    let again = Node::start(tmp.path(), "solo", port, &[], &[]);
    assert_eq!(again.id(), id);
    let members = again.members().unwrap();
    assert!(members[0]["incarnation"].as_u64().unwrap() >= 2);
}

#[test]
fn an_agent_without_a_key_says_so_and_still_forms_a_mesh() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start(tmp.path(), "open-a", pa, &[], &[]);
    let b = Node::start(tmp.path(), "open-b", pb, &[pa], &[]);
    assert!(a.log_text().contains("no --cluster-key"));
    let took = wait_until(Duration::from_secs(30), || {
        all_alive(&a, &["open-a", "open-b"]) && all_alive(&b, &["open-a", "open-b"])
    });
    assert!(took.is_some(), "open mesh did not form:\n{}", b.log_text());
}

/// Five agents: a crash is seen as `dead` by everyone; a 500 ms freeze is not; a SIGTERM is `left`.
#[test]
fn five_agents_tell_a_crash_from_a_pause_and_from_a_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let names: Vec<String> = (1..=5).map(|i| format!("f{i}")).collect();
    let nodes: Vec<Node> = (0..5)
        .map(|i| {
            let seeds: Vec<u16> = if i == 0 { vec![] } else { vec![ports[0]] };
            Node::start(tmp.path(), &names[i], ports[i], &seeds, &[])
        })
        .collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let took = wait_until(Duration::from_secs(30), || {
        nodes.iter().all(|n| all_alive(n, &all))
    });
    assert!(
        took.is_some(),
        "5 agents did not converge: {:?}",
        nodes[0].members()
    );

    // A 500 ms freeze (SIGSTOP, then SIGCONT): suspected perhaps, never dead.
    nodes[2].signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    nodes[2].signal(libc::SIGCONT);
    let watch = std::time::Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        for n in nodes.iter().filter(|n| n.name != "f3") {
            let state = n.state_of("f3");
            assert_ne!(
                state.as_deref(),
                Some("dead"),
                "{} declared the paused f3 dead",
                n.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // kill -9: every other agent shows it dead.
    nodes[4].signal(libc::SIGKILL);
    let others = &nodes[..4];
    let took = wait_until(Duration::from_secs(20), || {
        others
            .iter()
            .all(|n| n.state_of("f5").as_deref() == Some("dead"))
    });
    let took = took.unwrap_or_else(|| {
        panic!(
            "f5 not dead everywhere: {:?}",
            others.iter().map(|n| n.state_of("f5")).collect::<Vec<_>>()
        )
    });
    eprintln!("kill -9 of f5 seen as dead by all 4 others after {took:?}");

    // SIGTERM: left, not dead.
    let mut nodes = nodes;
    let leaver = nodes.remove(3);
    assert!(leaver.terminate().success());
    let took = wait_until(Duration::from_secs(10), || {
        nodes[..3]
            .iter()
            .all(|n| n.state_of("f4").as_deref() == Some("left"))
    });
    assert!(
        took.is_some(),
        "f4 not shown left: {:?}",
        nodes[0].members()
    );
}
