//! The body of one frame on the mesh stream `/dci/envelopes/3` (the frame itself is the
//! length-prefixed framing of `dci_proto::frame`): a tag byte, then
//!
//! - tag 0: the envelope's XML, for the receiving node;
//! - tag 1: a 2-byte big-endian length, that many bytes of a node id, then the envelope's XML:
//!   the receiving node is asked to relay the envelope to that node.
//!
//! In the other direction the receiver writes receipts: 4-byte big-endian counts of the frames it
//! has read since its last receipt.
//!
//! The relay header sits outside the envelope because it is a property of one hop, not of the
//! message: the envelope stays exactly what its sender wrote.

use dci_proto::{Envelope, Limits, ProtoError};

/// A decoded frame body.
#[derive(Debug)]
pub struct Body {
    /// The node to relay to, when this hop is a relay.
    pub relay_to: Option<String>,
    /// The envelope.
    pub env: Envelope,
}

/// Why a frame body was refused; the stream stays in step (the frame length was valid).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// An unknown tag or a truncated relay header.
    #[error("bad frame header: {0}")]
    Header(&'static str),
    /// The envelope itself.
    #[error(transparent)]
    Envelope(#[from] ProtoError),
}

/// Appends the frame (length prefix included) for `env` to `out`.
pub fn encode(env: &Envelope, relay_to: Option<&str>, out: &mut Vec<u8>) {
    let xml = env.to_xml();
    let header = match relay_to {
        None => 1,
        Some(node) => 3 + node.len(),
    };
    let len = (header + xml.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    match relay_to {
        None => out.push(0),
        Some(node) => {
            out.push(1);
            // Node ids are peer ids, far below 64 KiB; a longer one is cut (and then unknown).
            let node = &node.as_bytes()[..node.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(node.len() as u16).to_be_bytes());
            out.extend_from_slice(node);
        }
    }
    out.extend_from_slice(xml.as_bytes());
}

/// Decodes one frame body.
pub fn decode(body: &[u8], limits: &Limits) -> Result<Body, WireError> {
    match body.split_first() {
        Some((0, xml)) => Ok(Body {
            relay_to: None,
            env: Envelope::from_xml(xml, limits)?,
        }),
        Some((1, rest)) => {
            let (len, rest) = rest
                .split_first_chunk::<2>()
                .ok_or(WireError::Header("truncated relay header"))?;
            let len = u16::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return Err(WireError::Header("truncated relay target"));
            }
            let (node, xml) = rest.split_at(len);
            let node = std::str::from_utf8(node)
                .map_err(|_| WireError::Header("relay target is not UTF-8"))?;
            Ok(Body {
                relay_to: Some(node.to_owned()),
                env: Envelope::from_xml(xml, limits)?,
            })
        }
        Some(_) => Err(WireError::Header("unknown tag")),
        None => Err(WireError::Header("empty frame")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_proto::{frame, Destination, Payload, Sender, Target};
    use proptest::prelude::*;

    fn env() -> Envelope {
        Envelope::request(
            Sender {
                node: "a".into(),
                blade: None,
                app: "t".into(),
                instance: None,
            },
            Target {
                to: Destination::Node("b".into()),
                app: None,
                instance: None,
            },
            Payload::empty(),
        )
    }

    #[test]
    fn direct_and_relayed_frames_round_trip() {
        for relay in [None, Some("12D3KooWnode")] {
            let mut out = Vec::new();
            encode(&env(), relay, &mut out);
            let (body, used) = frame::decode_frame(&out, 1 << 20).unwrap().unwrap();
            assert_eq!(used, out.len());
            let b = decode(body, &Limits::default()).unwrap();
            assert_eq!(b.relay_to.as_deref(), relay);
        }
    }

    fn corpus() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/examples");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let xml = std::fs::read(entry.path()).unwrap();
            out.push([&[0u8][..], &xml].concat());
            let relay = [&[1u8, 0, 4][..], b"node", &xml].concat();
            out.push(relay);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// A bounded fuzz run over mutations of the example envelopes in both frame forms.
        #[test]
        fn mutated_example_frames_never_panic_the_decoder(
            pick in 0usize..64,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let corpus = corpus();
            let mut body = corpus[pick % corpus.len()].clone();
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let keep = cut.index(body.len() + 1);
            let _ = decode(&body, &Limits::default());
            let _ = decode(&body[..keep], &Limits::default());
        }

        #[test]
        fn no_frame_body_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, &Limits::default());
        }
    }
}
