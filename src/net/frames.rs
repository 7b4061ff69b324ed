//! One-way messages on long-lived streams: membership and election packets.
//!
//! Each message used to be a request-response exchange on a stream of its own: open, negotiate the
//! protocol, write, close, an empty answer, close again, each step a yamux frame and a wake-up of
//! another thread. At 20 members, with every seat holder renewing its lease with every member
//! three times a second, that was ten `sendto`s per message and saturated two cores with 21 idle
//! agents. Here each peer gets one outgoing stream per protocol, opened on the first message and
//! closed after [`WRITER_IDLE`] without one, and every message queued by then goes out in one write.
//! Both protocols are built to survive loss, so a message is dropped rather than waited for when
//! its peer's queue is full or its stream breaks; the next message opens a new stream.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

/// How long opening a stream (and dialling for it) may take before its queued messages are dropped.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// An outgoing stream with nothing to send for this long is closed, so that a connection to a
/// member this node no longer talks to can idle out.
const WRITER_IDLE: Duration = Duration::from_secs(30);
/// A write that does not finish in this long gives its stream up: the peer is not reading (or the
/// connection is wedged), and everything queued behind it would otherwise wait, or be dropped as
/// the queue fills, until the connection itself is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages waiting for one peer's stream; more are dropped (the peer is not keeping up).
const QUEUE: usize = 256;
/// Inbound messages waiting for the agent's event loop, from all peers.
const INBOUND_QUEUE: usize = 4096;

/// Which of the two protocols a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// SWIM packets (`crate::membership`).
    Membership,
    /// Claims, grants, renewals and seat tables (`crate::failover`).
    Election,
}

impl Lane {
    const ALL: [Lane; 2] = [Lane::Membership, Lane::Election];

    fn protocol(self) -> StreamProtocol {
        match self {
            Lane::Membership => super::MEMBERSHIP_PROTOCOL,
            Lane::Election => super::ELECTION_PROTOCOL,
        }
    }

    fn max_bytes(self) -> usize {
        match self {
            Lane::Membership => crate::membership::mesh::MAX_PACKET_BYTES,
            Lane::Election => crate::failover::driver::MAX_MESSAGE_BYTES,
        }
    }
}

/// What arrived from a peer.
#[derive(Debug)]
pub enum Inbound {
    /// A whole message.
    Message(Lane, PeerId, Vec<u8>),
    /// The peer broke the framing (an oversized length); its stream was closed.
    BadStream(Lane, PeerId, String),
}

enum Out {
    Message(Vec<u8>),
    /// Answered once everything queued before it was written.
    Flushed(oneshot::Sender<()>),
}

/// The outgoing streams, by peer and lane; owned by the agent's event loop.
pub struct Frames {
    control: libp2p_stream::Control,
    writers: HashMap<(Lane, PeerId), mpsc::Sender<Out>>,
    /// Membership and election messages dropped because a peer's queue was full (`dcish status`
    /// shows it as `messages-dropped`).
    pub dropped: u64,
}

impl Frames {
    /// Starts accepting both lanes' inbound streams; what they carry comes out of the receiver.
    pub fn start(mut control: libp2p_stream::Control) -> (Frames, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        for lane in Lane::ALL {
            match control.accept(lane.protocol()) {
                Ok(incoming) => {
                    tokio::spawn(accept(lane, incoming, tx.clone()));
                }
                Err(e) => tracing::error!("cannot accept {:?} streams: {e}", lane),
            }
        }
        let frames = Frames {
            control,
            writers: HashMap::new(),
            dropped: 0,
        };
        (frames, rx)
    }

    /// Queues `message` for `peer`; the caller makes sure a connection exists or is being dialled.
    pub fn send(&mut self, lane: Lane, peer: PeerId, message: Vec<u8>) {
        match self.writer(lane, peer).try_send(Out::Message(message)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.dropped += 1,
            // The writer gave up (idle, or its stream broke) since the last look: start another.
            Err(mpsc::error::TrySendError::Closed(Out::Message(message))) => {
                self.writers.remove(&(lane, peer));
                if self
                    .writer(lane, peer)
                    .try_send(Out::Message(message))
                    .is_err()
                {
                    self.dropped += 1;
                }
            }
            Err(mpsc::error::TrySendError::Closed(Out::Flushed(_))) => {}
        }
    }

    /// Resolves once every message queued so far for `peer` on `lane` is written (or dropped).
    pub fn flushed(&mut self, lane: Lane, peer: PeerId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.writer(lane, peer).try_send(Out::Flushed(tx));
        rx
    }

    fn writer(&mut self, lane: Lane, peer: PeerId) -> &mpsc::Sender<Out> {
        let control = &self.control;
        self.writers.entry((lane, peer)).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write(lane, peer, control.clone(), rx));
            tx
        })
    }
}

async fn accept(
    lane: Lane,
    mut incoming: libp2p_stream::IncomingStreams,
    tx: mpsc::Sender<Inbound>,
) {
    while let Some((peer, stream)) = incoming.next().await {
        tokio::spawn(read(lane, peer, stream, tx.clone()));
    }
}

/// Reads length-prefixed messages off one inbound stream until it ends.
async fn read<S: futures::AsyncRead + Unpin>(
    lane: Lane,
    peer: PeerId,
    stream: S,
    tx: mpsc::Sender<Inbound>,
) {
    let max = lane.max_bytes();
    let mut r = futures::io::BufReader::with_capacity(16 << 10, stream);
    loop {
        let mut head = [0u8; 4];
        if r.read_exact(&mut head).await.is_err() {
            return; // closed (or broken) between messages
        }
        let len = u32::from_be_bytes(head) as usize;
        if len > max {
            let reason = format!("a message of {len} bytes exceeds the {max}-byte limit");
            let _ = tx.send(Inbound::BadStream(lane, peer, reason)).await;
            return;
        }
        // Grown as the bytes arrive, not allocated at the announced length.
        let mut body = Vec::new();
        match (&mut r).take(len as u64).read_to_end(&mut body).await {
            Ok(n) if n == len => {}
            _ => return, // broken inside a message
        }
        if tx.send(Inbound::Message(lane, peer, body)).await.is_err() {
            return;
        }
    }
}

/// Opens a stream to `peer` and writes what is queued for it, everything waiting in one write.
async fn write(
    lane: Lane,
    peer: PeerId,
    mut control: libp2p_stream::Control,
    rx: mpsc::Receiver<Out>,
) {
    let opened =
        tokio::time::timeout(OPEN_TIMEOUT, control.open_stream(peer, lane.protocol())).await;
    let stream = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::debug!(%peer, "cannot open a {lane:?} stream: {e}"),
        Err(_) => return tracing::debug!(%peer, "opening a {lane:?} stream timed out"),
    };
    if let Err(e) = pump(stream, rx).await {
        tracing::debug!(%peer, "{lane:?} stream broke: {e}");
    }
}

/// Writes what is queued onto `stream` until it idles out, breaks, or stalls for longer than
/// [`WRITE_TIMEOUT`]. Returning drops the receiver, so the next message starts a new writer
/// instead of queueing behind a stream that no longer moves.
async fn pump<S: futures::AsyncWrite + Unpin>(
    mut stream: S,
    mut rx: mpsc::Receiver<Out>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(16 << 10);
    let mut flushed = Vec::new();
    loop {
        let first = match tokio::time::timeout(WRITER_IDLE, rx.recv()).await {
            Ok(Some(out)) => out,
            Ok(None) | Err(_) => break,
        };
        buf.clear();
        let mut next = Some(first);
        while let Some(out) = next {
            match out {
                Out::Message(m) => {
                    buf.extend_from_slice(&(m.len() as u32).to_be_bytes());
                    buf.extend_from_slice(&m);
                }
                Out::Flushed(done) => flushed.push(done),
            }
            next = if buf.len() < 1 << 20 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(&buf).await?;
            stream.flush().await
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled")));
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        written?;
    }
    let _ = stream.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    async fn read_all(lane: Lane, bytes: Vec<u8>) -> Vec<Inbound> {
        let (tx, mut rx) = mpsc::channel(16);
        read(lane, PeerId::random(), futures::io::Cursor::new(bytes), tx).await;
        let mut got = Vec::new();
        while let Ok(i) = rx.try_recv() {
            got.push(i);
        }
        got
    }

    #[tokio::test]
    async fn messages_come_out_whole_and_in_order() {
        let got = read_all(Lane::Election, framed(&[b"one", b"", b"three"])).await;
        let bodies: Vec<&[u8]> = got
            .iter()
            .map(|i| match i {
                Inbound::Message(Lane::Election, _, m) => m.as_slice(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(bodies, [&b"one"[..], b"", b"three"]);
    }

    #[tokio::test]
    async fn an_oversized_length_ends_the_stream_and_is_reported() {
        let mut bytes = framed(&[b"ok"]);
        let too_big = (Lane::Election.max_bytes() + 1) as u32;
        bytes.extend_from_slice(&too_big.to_be_bytes());
        bytes.extend_from_slice(&framed(&[b"never read"]));
        let got = read_all(Lane::Election, bytes).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Inbound::Message(_, _, m) if m == b"ok"));
        assert!(
            matches!(&got[1], Inbound::BadStream(Lane::Election, _, reason) if reason.contains("exceeds")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_message_cut_short_is_dropped() {
        let mut bytes = framed(&[b"whole"]);
        bytes.extend_from_slice(&10u32.to_be_bytes());
        bytes.extend_from_slice(b"half");
        let got = read_all(Lane::Membership, bytes).await;
        assert_eq!(got.len(), 1, "{got:?}");
    }

    /// A writer that never takes a byte: a peer that stopped reading.
    struct Stalled;

    impl futures::AsyncWrite for Stalled {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Pending
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Pending
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_stops_taking_writes_is_given_up_and_its_waiters_answered() {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done, flushed) = oneshot::channel();
        tx.try_send(Out::Message(b"probe".to_vec())).unwrap();
        tx.try_send(Out::Flushed(done)).unwrap();
        let started = tokio::time::Instant::now();
        let err = tokio::time::timeout(WRITE_TIMEOUT * 3, pump(Stalled, rx))
            .await
            .expect("the pump waits on a stalled stream")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
        flushed.await.expect("the flush waiter is answered");
        // The receiver is gone with the pump: the next send finds the queue closed and starts
        // a new writer (see `Frames::send`).
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn a_pump_writes_the_queue_framed_and_ends_when_its_senders_are_gone() {
        let (tx, rx) = mpsc::channel(QUEUE);
        tx.try_send(Out::Message(b"one".to_vec())).unwrap();
        tx.try_send(Out::Message(b"two".to_vec())).unwrap();
        drop(tx);
        let mut out = futures::io::Cursor::new(Vec::new());
        pump(&mut out, rx).await.unwrap();
        assert_eq!(out.into_inner(), framed(&[b"one", b"two"]));
    }
}
