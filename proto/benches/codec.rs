//! Envelope parse throughput for a 256-byte payload, beside quick-xml merely reading the same bytes
//! (the floor any XML codec pays). Run: `cargo bench -p dci-proto --bench codec`.

use std::time::Instant;

use dci_proto::{Destination, Envelope, Limits, Payload, Sender, Target};
use quick_xml::events::Event;
use quick_xml::Reader;

fn main() {
    let body = "x".repeat(256 - 40);
    let payload = Payload::new(format!("<echo xmlns=\"urn:dci:echo:1\">{body}</echo>")).unwrap();
    let env = Envelope::request(
        Sender {
            node: "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz1234567890abcdef".into(),
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
    let xml = env.to_xml();
    let bytes = xml.as_bytes();
    let limits = Limits::default();
    let n = 200_000;

    let t = Instant::now();
    let mut events = 0usize;
    for _ in 0..n {
        let mut r = Reader::from_reader(bytes);
        loop {
            match r.read_event() {
                Ok(Event::Eof) | Err(_) => break,
                Ok(_) => events += 1,
            }
        }
    }
    let floor = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for _ in 0..n {
        let e = Envelope::from_xml(bytes, &limits).expect("bench envelope parses");
        std::hint::black_box(e);
    }
    let parse = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(env.to_xml());
    }
    let write = n as f64 / t.elapsed().as_secs_f64();

    println!(
        "envelope of {} bytes (payload 256 B), {n} iterations, one core",
        bytes.len()
    );
    println!("quick-xml events only (floor): {floor:>12.0} /s  ({events} events)");
    println!("Envelope::from_xml:            {parse:>12.0} /s");
    println!("Envelope::to_xml:              {write:>12.0} /s");
}
