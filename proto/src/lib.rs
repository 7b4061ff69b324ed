//! The DCI wire format: the XML envelope every message travels in, its schema
//! (`proto/dci.xsd`), the length-prefixed framing used on libp2p streams and on the control
//! socket, and the typed payloads of the control socket.
//!
//! Design decisions, and why:
//!
//! - **The payload is kept verbatim.** An agent routes envelopes without understanding what they
//!   carry, and an envelope may be logged and replayed later, so the payload is the exact bytes
//!   between `<payload>` and `</payload>` (CDATA sections, comments, namespace declarations and
//!   all). It is checked (well-formed, no DTD, bounded size and depth, every top-level element in
//!   a namespace of its own) but never rewritten: what a peerlet sends is what its peer reads.
//! - **The header is strict.** Unknown attributes or elements in the header are refused, not
//!   ignored: a typo or a forged field is an error at the first hop, and a new field comes with a
//!   new namespace (`urn:dci:envelope:2`), never silently.
//! - **No DTDs, ever.** A `<!DOCTYPE>` or a markup declaration anywhere, payload included,
//!   refuses the envelope ([`ProtoError::Dtd`]). Only the five predefined entities and character
//!   references exist, so no input can expand into more than it is (no "billion laughs"), pull in
//!   an external entity, or mean different things to different parsers.
//! - **Size first.** [`Envelope::from_xml`] checks the input against [`Limits`] before it parses
//!   anything, and the framing reader checks a frame's length before it allocates its body.
//! - **Hand-written over serde.** quick-xml's serde support can neither capture the payload's bytes
//!   verbatim nor tell a refused header apart from a merely unknown one, so the codec walks
//!   quick-xml's events itself, with the checks of a conforming parser added on top (see `xml.rs`).
//!   Whatever it accepts, `xmllint --schema proto/dci.xsd` accepts too; the tests hold it to that.
//!
//! Nothing in this crate panics on input, and every error renders as one line.
#![deny(missing_docs)]

pub mod archive;
pub mod backup;
mod codec;
pub mod control;
mod envelope;
mod error;
pub mod frame;
pub mod fs;
pub mod notice;
pub mod package;
mod xml;

pub use envelope::{Destination, Envelope, Kind, Payload, Sender, Target};
pub use error::ProtoError;

/// The envelope namespace; the protocol version is part of it.
pub const NAMESPACE: &str = "urn:dci:envelope:1";

/// The largest TTL a router keeps: a received TTL above it is clamped to it by the router (the
/// codec itself accepts 0 to 255, and leaves TTL policy to the router).
pub const MAX_TTL: u8 = 9;

/// The default cap on one envelope's size, in bytes.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// Room left for the header when the payload limit is derived from the envelope limit.
const HEADER_ALLOWANCE_BYTES: usize = 4 << 10;

/// The default cap on payload nesting.
const DEFAULT_MAX_DEPTH: usize = 64;

/// Size and shape limits, checked before and while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest envelope accepted, in bytes; checked before parsing starts.
    pub max_envelope_bytes: usize,
    /// The largest payload accepted, in bytes (the text between `<payload>` and `</payload>`).
    pub max_payload_bytes: usize,
    /// The deepest element nesting accepted inside the payload; a top-level payload element is at
    /// depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 1 MiB envelopes, payloads up to 1 MiB less 4 KiB for the header, and depth 64.
    fn default() -> Self {
        Limits {
            max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
            max_payload_bytes: DEFAULT_MAX_ENVELOPE_BYTES - HEADER_ALLOWANCE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}
