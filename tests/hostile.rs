//! A member of the cluster (it holds the key) that lies: forged departures and refutations of
//! another node, garbage and oversized membership messages. The agent refuses each without effect
//! on its member table, counts it, and carries on.

mod common;

use std::time::Duration;

use common::{free_port, keygen, wait_until, Node};
use dci::config::read_cluster_key;
use dci::membership::mesh::{encode, MemberMeta, MeshPacket, MAX_UPDATES};
use dci::membership::swim::{Message, Packet, Update};
use dci::membership::Role;
use dci::net::{build_swarm, MEMBERSHIP_PROTOCOL};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};

fn counters(node: &Node) -> serde_json::Value {
    let out = node.dcish(&["--json", "status"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["counters"].clone()
}

/// Writes one membership packet on a stream of its own, as an agent frames it.
async fn send_once(control: &mut libp2p_stream::Control, to: PeerId, packet: &[u8]) {
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_secs(5),
        control.open_stream(to, MEMBERSHIP_PROTOCOL),
    )
    .await
    else {
        return;
    };
    let mut frame = (packet.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(packet);
    let _ = stream.write_all(&frame).await;
    let _ = stream.close().await;
}

fn gossip(update: Update<PeerId, MemberMeta, Vec<u8>>) -> Vec<u8> {
    let packet: MeshPacket = Packet {
        message: Message::Gossip,
        updates: vec![update],
    };
    encode(&packet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_member_changes_nothing_and_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let flag = ["--cluster-key", key.to_str().unwrap()];
    let (p1, p2) = (free_port(), free_port());
    let target = Node::start(tmp.path(), "target", p1, &[], &flag);
    let victim = Node::start(tmp.path(), "victim", p2, &[p1], &flag);
    let both_alive = || {
        target.members().is_some_and(|m| {
            m.iter()
                .any(|r| r["name"] == "victim" && r["state"] == "alive")
        })
    };
    assert!(wait_until(Duration::from_secs(20), both_alive).is_some());
    let victim_id: PeerId = victim.id().parse().unwrap();
    let target_id: PeerId = target.id().parse().unwrap();
    let meta = |name: &str| MemberMeta {
        name: name.into(),
        role: Role::Active,
        zone: "default".into(),
        addrs: vec![],
        data_addrs: vec![],
        version: "0".into(),
        resources: Default::default(),
        degraded: false,
        blade: None,
        helpers: Vec::new(),
        extra: 0,
    };

    // The liar: a real libp2p node with the cluster key, but its own identity.
    let psk = read_cluster_key(&key).unwrap();
    let mut liar = build_swarm(Keypair::generate_ed25519(), Some(psk), false).unwrap();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{p1}").parse().unwrap();
    let forged = [
        // The victim "leaves", and "refutes" with evil metadata: signed by the liar, not the victim.
        // Far above any real incarnation (they start at the wall clock in ms), so that only the
        // proof can refuse them.
        gossip(Update::Left {
            id: victim_id,
            inc: u64::MAX / 2,
            meta: meta("victim"),
            proof: vec![7; 64],
        }),
        gossip(Update::Alive {
            id: victim_id,
            inc: u64::MAX / 2 + 1,
            meta: meta("evil"),
            proof: vec![7; 64],
        }),
    ];
    // More updates than a packet may carry (an oversized frame never leaves the codec, whose
    // refusal the codec's own tests check).
    let too_many: MeshPacket = Packet {
        message: Message::Gossip,
        updates: (0..=MAX_UPDATES as u64)
            .map(|inc| Update::Suspect {
                id: victim_id,
                inc,
                from: target_id,
            })
            .collect(),
    };
    let oversized = encode(&too_many);
    let garbage = b"\xff\xff\xff\xff not a packet".to_vec();
    // The liar's swarm runs on its own, dialling the target again whenever it drops the liar (as
    // it does after an oversized or malformed packet).
    let mut control = liar.behaviour().stream.new_control();
    liar.dial(addr.clone()).unwrap();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { .. }
            | SwarmEvent::OutgoingConnectionError { .. } = liar.select_next_some().await
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = liar.dial(addr.clone());
            }
        }
    });
    // One at a time, each sent again until the target has counted it.
    let expected = [
        ("membership-forged", 1),
        ("membership-forged", 2),
        ("membership-oversized", 1),
        ("membership-malformed", 1),
    ];
    let messages = [forged[0].clone(), forged[1].clone(), oversized, garbage];
    for (bytes, (counter, n)) in messages.iter().zip(expected) {
        let mut counted = false;
        for _ in 0..10 {
            send_once(&mut control, target_id, bytes).await;
            counted = tokio::task::block_in_place(|| {
                wait_until(Duration::from_secs(3), || {
                    counters(&target)[counter].as_u64() >= Some(n)
                })
                .is_some()
            });
            if counted {
                break;
            }
        }
        assert!(
            counted,
            "{counter} never reached {n}: {:?}",
            counters(&target)
        );
    }

    let counted = wait_until(Duration::from_secs(10), || {
        let c = counters(&target);
        c["membership-forged"].as_u64() >= Some(2)
            && c["membership-malformed"].as_u64() >= Some(1)
            && c["membership-oversized"].as_u64() >= Some(1)
    });
    assert!(
        counted.is_some(),
        "{:?}\n{}",
        counters(&target),
        target.log_text()
    );
    // Nothing changed: the victim is alive, under its own name.
    let members = target.members().unwrap();
    let row = members
        .iter()
        .find(|m| m["id"] == victim_id.to_string())
        .unwrap();
    assert_eq!(
        (row["name"].as_str(), row["state"].as_str()),
        (Some("victim"), Some("alive"))
    );
    assert!(members.iter().all(|m| m["name"] != "evil"));
}

/// The data port carries no cluster-key layer (see `dci::net`): a stranger completes the noise
/// handshake there, but is not a member of the mesh, so it is disconnected before its request
/// is read. Members, meanwhile, back up through the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_on_the_data_port_is_disconnected_and_members_still_back_up() {
    use dci::replication::protocol::{self, Request};
    use libp2p::request_response::Event;

    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), b"kept on the holder\n").unwrap();
    let (p1, p2, data_port) = (free_port(), free_port(), free_port());
    let data_listen = format!("/ip4/127.0.0.1/tcp/{data_port}");
    let owner = Node::start(
        tmp.path(),
        "owner",
        p1,
        &[],
        &[
            "--cluster-key",
            key.to_str().unwrap(),
            "--backup-root",
            root.to_str().unwrap(),
            "--replication-factor",
            "1",
            "--data-listen",
            &data_listen,
        ],
    );
    let holder = Node::start(
        tmp.path(),
        "holder",
        p2,
        &[p1],
        &["--cluster-key", key.to_str().unwrap()],
    );
    let both_alive = || owner.sees_alive(2);
    assert!(wait_until(Duration::from_secs(20), both_alive).is_some());
    let backed_up = wait_until(Duration::from_secs(30), || {
        owner.dcish(&["backup", "now"]).status.success()
    });
    assert!(backed_up.is_some(), "{}", owner.log_text());

    // The stranger: its own identity, no key needed at this port; it allows the owner on its side.
    let owner_id: PeerId = owner.id().parse().unwrap();
    let mut stranger = dci::net::build_data_swarm(Keypair::generate_ed25519()).unwrap();
    stranger.behaviour_mut().members.allow_peer(owner_id);
    let request = protocol::encode(&(
        0u64,
        Request::Catalog {
            blade: "owner".into(),
        },
    ));
    stranger.behaviour_mut().blocks.send_request_with_addresses(
        &owner_id,
        request,
        vec![data_listen.parse().unwrap()],
    );
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let SwarmEvent::Behaviour(dci::net::DataBehaviourEvent::Blocks(e)) =
                stranger.select_next_some().await
            {
                return e;
            }
        }
    })
    .await
    .expect("the stranger's request neither failed nor was answered");
    assert!(
        matches!(outcome, Event::OutboundFailure { .. }),
        "a stranger got an answer: {outcome:?}"
    );
    let refused = wait_until(Duration::from_secs(10), || {
        owner.log_text().contains("refused block connection")
    });
    assert!(refused.is_some(), "{}", owner.log_text());
    drop(holder);
}
