//! Messaging benchmarks, each printed beside a reference measured in the same run:
//!
//! - `route`: parse + route + deliver of envelopes with a 256-byte payload to an `echo` peerlet
//!   in one thread, beside quick-xml merely reading the same bytes (the floor);
//! - `mesh`: two agents in this process talking over loopback TCP (noise, yamux): throughput
//!   of echo requests with a window in flight, and the round trip at a paced 10,000/s, beside a
//!   plain TCP echo of the same frames;
//! - `memory`: resident memory per idle peerlet instance and per queued envelope.
//!
//! Run: `cargo bench --bench messaging -- [route|mesh|memory]` (all three by default).
//! `DCI_BENCH_SECONDS` sets each timed phase (default 3).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dci::peerlet_host::Host;
use dci::router::core::{Action, Origin, Peer, Router, View};
use dci_peerlet::{Destination, Envelope, Kind, Outbox, Payload, Sender, Target, Uuid};
use dci_proto::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAYLOAD_BYTES: usize = 256;

/// The bench payload, checked once: the load generator must not spend the agents' CPU on it.
fn payload() -> Payload {
    static PAYLOAD: std::sync::OnceLock<Payload> = std::sync::OnceLock::new();
    PAYLOAD.get_or_init(make_payload).clone()
}

fn make_payload() -> Payload {
    let open = "<data xmlns=\"urn:dci:bench:1\">";
    let close = "</data>";
    let body = "x".repeat(PAYLOAD_BYTES - open.len() - close.len());
    Payload::new(format!("{open}{body}{close}")).expect("a valid payload")
}

fn envelope(from: &str, to: Destination, kind: Kind) -> Envelope {
    let mut env = Envelope::request(
        Sender {
            node: from.into(),
            blade: Some("blade-01".into()),
            app: "bench".into(),
            instance: Some(Uuid::new_v4()),
        },
        Target {
            to,
            app: Some("echo".into()),
            instance: None,
        },
        payload(),
    );
    env.kind = kind;
    env.epoch = Some(0);
    env
}

fn seconds() -> f64 {
    std::env::var("DCI_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

/// Runs `f` repeatedly for about `secs` and returns calls per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct NoOutbox;
impl Outbox for NoOutbox {
    fn post(&self, _env: Envelope) -> bool {
        false
    }
}

fn route() {
    let secs = seconds();
    let view = Arc::new(View {
        local: "node-b".into(),
        local_blade: Some("blade-02".into()),
        local_epoch: None,
        peers: vec![Peer {
            node: "node-a".into(),
            blade: Some("blade-01".into()),
            up: true,
            connected: true,
        }],
        groups: Default::default(),
        seats: Default::default(),
        helpers: Default::default(),
        helping: None,
    });
    let limits = Limits::default();
    for kind in [Kind::Event, Kind::Request] {
        // Fresh ids per envelope, or the dedup would drop all but the first.
        let frames: Vec<Vec<u8>> = (0..4096)
            .map(|_| {
                envelope("node-a", Destination::Blade("blade-02".into()), kind)
                    .to_xml()
                    .into_bytes()
            })
            .collect();
        let floor = {
            let mut i = 0;
            rate(secs, || {
                let mut r = quick_xml::Reader::from_reader(&frames[i % frames.len()][..]);
                let mut buf = Vec::new();
                loop {
                    match r.read_event_into(&mut buf) {
                        Ok(quick_xml::events::Event::Eof) | Err(_) => break,
                        Ok(e) => {
                            black_box(e);
                        }
                    }
                    buf.clear();
                }
                i += 1;
            })
        };
        let parse_only = {
            let mut i = 0;
            rate(secs, || {
                black_box(Envelope::from_xml(&frames[i % frames.len()], &limits).ok());
                i += 1;
            })
        };
        let mut router = Router::new(Arc::clone(&view));
        let mut host = Host::new(
            "node-b".into(),
            Some("blade-02".into()),
            Arc::new(NoOutbox),
            Duration::from_secs(60),
        );
        dci::peerlet_host::register_builtins(&mut host);
        let mut out = Vec::new();
        let mut i = 0usize;
        let mut sent = 0u64;
        let ours = rate(secs, || {
            let bytes = &frames[i % frames.len()];
            i += 1;
            let mut env = Envelope::from_xml(bytes, &limits).expect("valid");
            // The dedup remembers ids; give each pass its own.
            env.id = Uuid::from_u128(i as u128);
            router.handle(env, Origin::Peer("node-a".into()));
            let actions: Vec<Action> = router.drain().collect();
            for a in actions {
                match a {
                    Action::Deliver(env) => host.deliver(&env, Duration::ZERO, &mut out),
                    Action::Send { .. } => sent += 1,
                }
            }
            for reply in out.drain(..) {
                router.handle(reply, Origin::Local);
                sent += router.drain().count() as u64;
            }
        });
        println!(
            "route {:<7} parse+route+deliver{}: {:>9.0}/s   dci-proto parse alone: {:>9.0}/s   quick-xml reading the same {} bytes: {:>9.0}/s ({:.1}x the floor's time); {} replies routed",
            kind.as_str(),
            if kind == Kind::Request { "+reply" } else { "" },
            ours,
            parse_only,
            frames[0].len(),
            floor,
            floor / ours,
            sent
        );
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

/// Each memory figure is taken in a fresh process, so one cannot reuse another's freed pages.
fn memory() {
    for what in ["echo", "chat", "queue"] {
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(["memory-one", what])
            .output()
            .expect("runs itself");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn memory_one(what: &str) {
    const N: usize = 100_000;
    let mut host = Host::new(
        "n".into(),
        Some("b".into()),
        Arc::new(NoOutbox),
        Duration::from_secs(600),
    );
    dci::peerlet_host::register_builtins(&mut host);
    let mut out = Vec::new();
    for app in ["echo", "chat"].into_iter().filter(|a| *a == what) {
        let before = rss_kib();
        for _ in 0..N {
            let mut env = envelope("a", Destination::Node("n".into()), Kind::Event);
            env.target.app = Some(app.into());
            env.target.instance = Some(Uuid::new_v4());
            env.payload = Payload::empty();
            host.deliver(&env, Duration::ZERO, &mut out);
        }
        out.clear();
        let after = rss_kib();
        println!(
            "memory: {N} idle {app} instances: {:.0} bytes each (resident {} KiB -> {} KiB)",
            (after.saturating_sub(before) * 1024) as f64 / N as f64,
            before,
            after
        );
    }
    if what != "queue" {
        return;
    }
    let before = rss_kib();
    let (tx, rx) = tokio::sync::mpsc::channel::<(Envelope, Option<String>)>(N);
    for _ in 0..N {
        let _ = tx.try_send((
            envelope("a", Destination::Node("n".into()), Kind::Request),
            None,
        ));
    }
    let after = rss_kib();
    println!(
        "memory: {N} queued envelopes (256-byte payload) in a peer queue: {:.0} bytes each; the XML alone is {} bytes",
        (after.saturating_sub(before) * 1024) as f64 / N as f64,
        envelope("a", Destination::Node("n".into()), Kind::Request).to_xml().len()
    );
    drop(rx);
}

async fn start_agent(
    dir: &std::path::Path,
    name: &str,
    port: u16,
    join: Option<u16>,
) -> (dci::router::MessengerHandle, String) {
    let overrides = dci::config::Overrides {
        name: Some(name.into()),
        data_dir: Some(dir.join(name)),
        listen: vec![format!("127.0.0.1:{port}")],
        join: join
            .map(|p| vec![format!("127.0.0.1:{p}")])
            .unwrap_or_default(),
        no_mdns: true,
        ..Default::default()
    };
    let config = dci::config::Config::load(&overrides).expect("config");
    let agent = dci::agent::Agent::start(config)
        .await
        .expect("agent starts");
    let handle = agent.messenger();
    let id = agent.local_id().to_string();
    tokio::spawn(agent.run(std::future::pending()));
    (handle, id)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or_default()
}

/// Runs `one` with `window` in flight for `secs`; returns completions per second.
async fn throughput<F, Fut>(secs: f64, window: usize, one: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut done = 0u64;
    loop {
        while inflight.len() < window && start.elapsed().as_secs_f64() < secs {
            inflight.push(one());
        }
        match inflight.next().await {
            Some(ok) => done += u64::from(ok),
            None => break,
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Sends at `per_s` for `secs` and returns the round-trip times.
async fn paced<F, Fut>(secs: f64, per_s: u64, one: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let total = (secs * per_s as f64) as u64;
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut rtts = Vec::with_capacity(total as usize);
    let mut issued = 0u64;
    while issued < total || !inflight.is_empty() {
        let due = start + Duration::from_secs_f64(issued as f64 / per_s as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()), if issued < total => {
                let t = Instant::now();
                let f = one();
                inflight.push(async move { (f.await, t.elapsed()) });
                issued += 1;
            }
            Some((ok, rtt)) = inflight.next(), if !inflight.is_empty() => {
                if ok { rtts.push(rtt); }
            }
        }
    }
    rtts
}

async fn tcp_echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            sock.set_nodelay(true).ok();
            tokio::spawn(async move {
                let (mut r, mut w) = sock.into_split();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// A pipelined TCP echo client: each call sends one frame and waits for its echo (frames are
/// echoed in order, so a shared reader hands echoes back in order).
struct TcpEcho {
    tx: tokio::sync::mpsc::UnboundedSender<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>,
}

impl TcpEcho {
    async fn connect(port: u16) -> TcpEcho {
        let sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        sock.set_nodelay(true).ok();
        let (mut r, mut w) = sock.into_split();
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>();
        let (wait_tx, mut wait_rx) =
            tokio::sync::mpsc::unbounded_channel::<(usize, tokio::sync::oneshot::Sender<()>)>();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some((frame, done)) = rx.recv().await {
                buf.clear();
                buf.extend_from_slice(&frame);
                let _ = wait_tx.send((frame.len(), done));
                while let Ok((frame, done)) = rx.try_recv() {
                    buf.extend_from_slice(&frame);
                    let _ = wait_tx.send((frame.len(), done));
                }
                if w.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            while let Some((len, done)) = wait_rx.recv().await {
                if r.read_exact(&mut buf[..len]).await.is_err() {
                    return;
                }
                let _ = done.send(());
            }
        });
        TcpEcho { tx }
    }

    async fn echo(&self, frame: Vec<u8>) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send((frame, tx)).is_ok() && rx.await.is_ok()
    }
}

fn mesh() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let secs = seconds();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pa, pb) = (free_port(), free_port());
        let (a, _) = start_agent(dir.path(), "bench-a", pa, None).await;
        let (b, b_id) = start_agent(dir.path(), "bench-b", pb, Some(pa)).await;
        let one = || {
            let a = a.clone();
            let env = envelope("x", Destination::Node(b_id.clone()), Kind::Request);
            async move {
                a.request(env)
                    .await
                    .is_some_and(|ans| ans.answers.len() == 1 && ans.answers[0].kind == Kind::Reply)
            }
        };
        // Wait for the mesh: the first answer.
        let start = Instant::now();
        while !one().await {
            if start.elapsed() > Duration::from_secs(20) {
                panic!("the two agents never answered each other");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let frame = dci_proto::frame::encode_frame(
            envelope("x", Destination::Node(b_id.clone()), Kind::Request).to_xml().as_bytes(),
        )
        .expect("frame");
        let tcp = Arc::new(TcpEcho::connect(tcp_echo_server().await).await);
        let tcp_one = || {
            let tcp = Arc::clone(&tcp);
            let frame = frame.clone();
            async move { tcp.echo(frame).await }
        };
        for window in [1usize, 64, 1024] {
            let ours = throughput(secs, window, one).await;
            let reference = throughput(secs, window, tcp_one).await;
            println!(
                "mesh: echo requests A->B->A, {window:>4} in flight: {ours:>8.0}/s   plain TCP echo of the same {}-byte frames: {reference:>8.0}/s",
                frame.len()
            );
        }
        // One way: events A -> B as fast as A's queues take them, counted where B delivers them.
        let delivered = |h: dci::router::MessengerHandle| async move {
            h.stats()
                .await
                .into_iter()
                .find(|(n, _)| n == "envelopes-delivered")
                .map_or(0, |(_, v)| v)
        };
        let before = delivered(b.clone()).await;
        let n = (secs * 100_000.0) as u64;
        let start = Instant::now();
        for _ in 0..n {
            let mut env = envelope("x", Destination::Node(b_id.clone()), Kind::Event);
            env.target.instance = Some(Uuid::from_u128(1));
            a.send(env).await;
        }
        while delivered(b.clone()).await < before + n {
            if start.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = delivered(b.clone()).await - before;
        println!(
            "mesh: one-way events A->B: {:>8.0} envelopes/s ({got} of {n} delivered)",
            got as f64 / start.elapsed().as_secs_f64()
        );
        let mut ours = paced(secs, 10_000, one).await;
        let mut reference = paced(secs, 10_000, tcp_one).await;
        println!(
            "mesh: round trip at 10,000/s: p50 {:?} p99 {:?} ({} answered)   plain TCP echo: p50 {:?} p99 {:?}",
            percentile(&mut ours, 0.5),
            percentile(&mut ours, 0.99),
            ours.len(),
            percentile(&mut reference, 0.5),
            percentile(&mut reference, 0.99),
        );
    });
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if which.first().map(String::as_str) == Some("memory-one") {
        return memory_one(which.get(1).map_or("", String::as_str));
    }
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if run("route") {
        route();
    }
    if run("memory") {
        memory();
    }
    if run("mesh") {
        mesh();
    }
}
