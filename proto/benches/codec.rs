//! Envelope throughput for a 256-byte payload, beside quick-xml merely reading the same bytes
//! (the floor any quick-xml-based codec pays). Run: `cargo bench -p dci-proto --bench codec`
//! (`DCI_BENCH_ITERATIONS` overrides the iteration count).

use std::hint::black_box;
use std::time::Instant;

use dci_proto::{Destination, Envelope, Limits, Payload, Sender, Target};
use quick_xml::events::Event;
use quick_xml::Reader;

const PAYLOAD_BYTES: usize = 256;

fn envelope() -> Envelope {
    let open = "<echo xmlns=\"urn:dci:echo:1\">";
    let close = "</echo>";
    let body = "x".repeat(PAYLOAD_BYTES - open.len() - close.len());
    let payload = Payload::new(format!("{open}{body}{close}")).expect("the bench payload is valid");
    assert_eq!(payload.as_str().len(), PAYLOAD_BYTES);
    let mut env = Envelope::request(
        Sender {
            node: "12D3KooWGzh9Mn3XzVn3L7d7x4F2K1Qq4sJrDk6uYtBz8cN1pQeR".into(),
            blade: Some("blade-01".into()),
            app: "echo".into(),
            instance: Some(uuid::Uuid::new_v4()),
        },
        Target {
            to: Destination::Blade("blade-02".into()),
            app: Some("echo".into()),
            instance: None,
        },
        payload,
    );
    env.epoch = Some(3);
    env
}

/// Runs `f` `n` times and returns the rate per second.
fn rate(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn main() {
    let n: u32 = std::env::var("DCI_BENCH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let env = envelope();
    let xml = env.to_xml();
    let bytes = xml.as_bytes();
    let limits = Limits::default();
    assert_eq!(
        Envelope::from_xml(bytes, &limits).as_ref(),
        Ok(&env),
        "the bench envelope round-trips"
    );

    let floor = rate(n, || {
        let mut reader = Reader::from_reader(black_box(bytes));
        while let Ok(event) = reader.read_event() {
            if matches!(event, Event::Eof) {
                break;
            }
            black_box(event);
        }
    });
    let parse = rate(n, || {
        black_box(Envelope::from_xml(black_box(bytes), &limits).ok());
    });
    let write = rate(n, || {
        black_box(black_box(&env).to_xml());
    });

    println!(
        "envelope of {} bytes ({PAYLOAD_BYTES}-byte payload), {n} iterations each, one thread",
        bytes.len()
    );
    println!("  quick-xml events only (floor) {floor:>12.0} envelopes/s");
    println!(
        "  Envelope::from_xml            {parse:>12.0} envelopes/s  ({:.1}x the floor's time)",
        floor / parse
    );
    println!("  Envelope::to_xml              {write:>12.0} envelopes/s");
}
