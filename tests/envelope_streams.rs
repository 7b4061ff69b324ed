//! A test peer (a libp2p swarm in this process) on the envelope streams of real agents:
//!
//! - it speaks badly: a garbage frame body, a DTD, a wrong namespace, a TTL of 0, a forged failure
//!   notice, an envelope speaking for the agent's blade under a stale epoch, then a good request
//!   on the same stream, and last an oversized length. The agent
//!   refuses each with a count and a log line, keeps the stream until its framing is lost, answers
//!   the good request, and carries on;
//! - it asks one agent to relay to another that cannot reach it: the envelope goes through the
//!   intermediary, and so does the answer;
//! - it floods an agent with requests and never reads the answers: the agent's queue towards it
//!   fills, its answers are refused `busy`, and the agent stays responsive with bounded memory.

mod common;

use std::time::Duration;

use common::{free_port, wait_until, Node};
use dci::net::build_swarm;
use dci::router::{wire, MESH_PROTOCOL};
use dci_proto::{Destination, Envelope, Kind, Limits, Payload, Sender, Target};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

fn counters(node: &Node) -> serde_json::Value {
    let out = node.dcish(&["--json", "status"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["counters"].clone()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn envelope_frame(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(env, None, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_are_refused_and_counted_and_the_stream_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let target = Node::start(tmp.path(), "target", port, &[], &[]);
    let target_id: PeerId = target.id().parse().unwrap();
    // Alone, it seats its own blade after a moment: the epoch a sender speaking for it must carry.
    let epoch = || -> Option<u64> {
        let out = target.dcish(&["--json", "seats"]);
        let seats: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        seats.as_array()?.iter().find_map(|s| {
            (s["blade"] == "target" && s["state"] == "held")
                .then(|| s["epoch"].as_u64())
                .flatten()
        })
    };
    assert!(wait_until(Duration::from_secs(30), || epoch().is_some()).is_some());
    let seat_epoch = epoch().unwrap();

    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = build_swarm(key, None, false).unwrap();
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(MESH_PROTOCOL).unwrap();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    swarm.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut stream = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match control.open_stream(target_id, MESH_PROTOCOL).await {
                Ok(s) => return s,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("a stream to the agent");

    let good = |ttl: u8, payload: &str, app: &str| {
        let mut e = Envelope::request(
            Sender {
                node: me.to_string(),
                blade: None,
                app: "test".into(),
                instance: None,
            },
            Target {
                to: Destination::Node(target_id.to_string()),
                app: Some(app.into()),
                instance: None,
            },
            Payload::new(payload).unwrap(),
        );
        e.ttl = ttl;
        e
    };
    let xml = good(9, "", "echo").to_xml();
    let mut bytes = Vec::new();
    bytes.extend(frame(b"\x00not xml at all"));
    bytes.extend(frame(b"\x07unknown tag"));
    bytes.extend(frame(
        format!("\x00<!DOCTYPE x [<!ENTITY a \"b\">]>{xml}").as_bytes(),
    ));
    bytes.extend(frame(
        format!(
            "\x00{}",
            xml.replace("urn:dci:envelope:1", "urn:dci:envelope:9")
        )
        .as_bytes(),
    ));
    // A TTL of 0 is expired: the agent answers with an error, to us.
    bytes.extend(envelope_frame(&good(0, "", "echo")));
    // A failure notice claiming another sender.
    let mut forged = good(
        9,
        r#"<notice xmlns="urn:dci:notice:1" level="system-down" part="node" at="1" id="x">forged</notice>"#,
        "failure-notice",
    );
    forged.kind = Kind::Event;
    forged.sender.node = target_id.to_string();
    bytes.extend(envelope_frame(&forged));
    // Speaking for the blade under an older epoch (none): fenced, and told so.
    let mut stale = good(9, "", "echo");
    stale.sender.blade = Some("target".into());
    stale.epoch = Some(seat_epoch - 1).filter(|e| *e > 0);
    bytes.extend(envelope_frame(&stale));
    // And a good request after all of it, under the seat's own epoch.
    let mut request = good(9, r#"<after xmlns="urn:t:1">still here</after>"#, "echo");
    request.sender.blade = Some("target".into());
    request.epoch = Some(seat_epoch);
    bytes.extend(envelope_frame(&request));
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();

    // The answers come back on a stream the agent opens to us.
    let (_, mut back) = tokio::time::timeout(Duration::from_secs(10), incoming.next())
        .await
        .expect("the agent answers")
        .unwrap();
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let mut head = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), back.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
        back.read_exact(&mut body).await.unwrap();
        answers.push(wire::decode(&body, &Limits::default()).unwrap().env);
    }
    let mut errors: Vec<String> = answers
        .iter()
        .filter(|a| a.kind == Kind::Error)
        .map(|a| {
            dci_proto::control::error_from_payload(&a.payload)
                .unwrap()
                .0
        })
        .collect();
    errors.sort();
    assert_eq!(errors, ["expired", "stale-epoch"]);
    let reply = answers
        .iter()
        .find(|a| a.kind == Kind::Reply)
        .expect("the good request answered");
    assert_eq!(reply.correlation, Some(request.id));
    assert!(reply.payload.as_str().contains("still here"));

    let c = counters(&target);
    assert_eq!(c["envelopes-malformed"], 4, "{c}");
    assert_eq!(c["envelopes-forged"], 1, "{c}");
    assert_eq!(c["envelopes-expired"], 1, "{c}");
    assert_eq!(c["envelopes-stale-epoch"], 1, "{c}");
    assert_eq!(c["notices-received"], 0, "{c}");

    // An oversized length loses the framing: that stream is closed, the agent goes on.
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || counters(&target)
        ["envelopes-malformed"]
        == 5)
    .is_some());
    assert!(target.members().is_some(), "the agent still answers");
    assert!(
        target.log_text().contains("refused envelope"),
        "each refusal is a log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_is_relayed_to_a_node_it_cannot_reach_and_the_answer_comes_back_the_same_way() {
    let tmp = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let b1 = Node::start(tmp.path(), "b1", p1, &[], &[]);
    let b2 = Node::start(tmp.path(), "b2", p2, &[p1], &[]);
    assert!(
        wait_until(Duration::from_secs(20), || b1.state_of("b2").as_deref()
            == Some("alive"))
        .is_some()
    );
    let (b1_id, b2_id): (PeerId, PeerId) = (b1.id().parse().unwrap(), b2.id().parse().unwrap());

    // A client connected to b1 only: b2 has no address for it.
    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = build_swarm(key, None, false).unwrap();
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(MESH_PROTOCOL).unwrap();
    swarm
        .dial(
            format!("/ip4/127.0.0.1/tcp/{p1}")
                .parse::<Multiaddr>()
                .unwrap(),
        )
        .unwrap();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut stream = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match control.open_stream(b1_id, MESH_PROTOCOL).await {
                Ok(s) => return s,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("a stream to b1");
    let request = Envelope::request(
        Sender {
            node: me.to_string(),
            blade: None,
            app: "test".into(),
            instance: None,
        },
        Target {
            to: Destination::Node(b2_id.to_string()),
            app: Some("echo".into()),
            instance: None,
        },
        Payload::new(r#"<whoami xmlns="urn:dci:echo:1"/>"#).unwrap(),
    );
    // Tag 1: b1, relay this to b2.
    let mut bytes = Vec::new();
    wire::encode(&request, Some(&b2_id.to_string()), &mut bytes);
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();

    // b2 cannot open a stream to us, so its answer comes back through b1.
    let (from, mut back) = tokio::time::timeout(Duration::from_secs(15), incoming.next())
        .await
        .expect("an answer comes back")
        .unwrap();
    assert_eq!(from, b1_id, "the answer arrives from the relay");
    let mut head = [0u8; 4];
    back.read_exact(&mut head).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    back.read_exact(&mut body).await.unwrap();
    let reply = wire::decode(&body, &Limits::default()).unwrap().env;
    assert_eq!(reply.kind, Kind::Reply, "{}", reply.to_xml());
    assert_eq!(reply.correlation, Some(request.id));
    assert!(reply.payload.as_str().contains("blade=\"b2\""));
    // The answer paid for its hops on the way back.
    assert!(reply.ttl < dci_proto::MAX_TTL);
    assert!(
        counters(&b1)["envelopes-relayed"].as_u64() >= Some(2),
        "{}",
        counters(&b1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_gets_busy_answers_and_the_agent_stays_responsive() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let target = Node::start(
        tmp.path(),
        "target",
        port,
        &[],
        &["--config", &small_queue(tmp.path())],
    );
    let target_id: PeerId = target.id().parse().unwrap();

    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = build_swarm(key, None, false).unwrap();
    let mut control = swarm.behaviour().stream.new_control();
    // Accept the agent's stream but never read it: its answers pile up.
    let mut incoming = control.accept(MESH_PROTOCOL).unwrap();
    let (held_tx, held) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(s) = incoming.next().await {
            let _ = held_tx.send(s);
        }
    });
    swarm
        .dial(
            format!("/ip4/127.0.0.1/tcp/{port}")
                .parse::<Multiaddr>()
                .unwrap(),
        )
        .unwrap();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut stream = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match control.open_stream(target_id, MESH_PROTOCOL).await {
                Ok(s) => return s,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("a stream to the agent");
    let big = format!(r#"<fill xmlns="urn:t:1">{}</fill>"#, "x".repeat(60_000));
    let request = || {
        let mut bytes = Vec::new();
        let env = Envelope::request(
            Sender {
                node: me.to_string(),
                blade: None,
                app: "test".into(),
                instance: None,
            },
            Target {
                to: Destination::Node(target_id.to_string()),
                app: Some("echo".into()),
                instance: None,
            },
            Payload::new(big.clone()).unwrap(),
        );
        wire::encode(&env, None, &mut bytes);
        bytes
    };
    // Each answer is as big as its request; send until the agent says it is busy towards us.
    let busy = |n: &Node| counters(n)["envelopes-busy"].as_u64().unwrap_or(0);
    let mut sent = 0;
    while busy(&target) == 0 && sent < 4000 {
        for _ in 0..100 {
            stream.write_all(&request()).await.unwrap();
        }
        stream.flush().await.unwrap();
        sent += 100;
    }
    assert!(
        busy(&target) > 0,
        "no back-pressure after {sent} requests of 60 KB"
    );
    // The agent answers its operator meanwhile, and its memory stayed bounded by the queue.
    let start = std::time::Instant::now();
    assert!(target.members().is_some());
    assert!(start.elapsed() < Duration::from_secs(5));
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", target.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        rss_kb < 300_000,
        "the agent holds {rss_kb} KiB after {sent} requests"
    );
    drop(held); // the unread streams stayed open until here
}

/// A config with a peer queue of 16 envelopes.
fn small_queue(dir: &std::path::Path) -> String {
    let path = dir.join("small-queue.toml");
    std::fs::write(&path, "[messaging]\npeer_queue = 16\n").unwrap();
    path.to_str().unwrap().to_owned()
}
