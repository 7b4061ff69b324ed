//! The DCI wire format: the XML envelope that every message travels in, its framing, and the typed
//! payloads of the control socket.
//!
//! Design decisions:
//! - **The payload is kept verbatim.** The agent routes envelopes without understanding what they
//!   carry, so the payload is the exact bytes between `<payload>` and `</payload>` (CDATA, comments
//!   and namespace declarations included). It is checked for well-formedness, never rewritten.
//! - **The header is strict.** Unknown attributes or elements in the envelope header are refused, so
//!   that a typo or a forged field is an error, not something silently ignored.
//! - **No DTDs, ever.** A `<!DOCTYPE` anywhere (header or payload) refuses the envelope, so no entity
//!   can be declared or expanded; only the five predefined entities and character references exist.
//! - **Size first.** Every decoder checks the input size against [`Limits`] before parsing.
//!
//! The schema is `proto/dci.xsd` (with `proto/control.xsd` for control payloads); `proto/README.md`
//! documents the fields and the framing.
#![deny(missing_docs)]

pub mod control;
mod error;
pub mod frame;
mod xml;

use std::fmt;
use std::str::FromStr;

use quick_xml::escape::escape;
use uuid::Uuid;

pub use error::ProtoError;

/// The envelope namespace; the version is part of it.
pub const NAMESPACE: &str = "urn:dci:envelope:1";
/// A received TTL above this is clamped to it by the router (the codec accepts 0 to 255).
pub const MAX_TTL: u8 = 9;
/// Default cap on one envelope's size.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// Size and shape limits applied before and while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: usize,
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Deepest element nesting accepted inside the payload.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
            max_payload_bytes: DEFAULT_MAX_ENVELOPE_BYTES - 4096,
            max_depth: 64,
        }
    }
}

/// What an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Asks for something; may get a reply or an error.
    Request,
    /// Answers a request (`correlation` names it).
    Reply,
    /// Tells something; no answer expected.
    Event,
    /// Says a request failed (`correlation` names it).
    Error,
}

impl Kind {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Reply => "reply",
            Kind::Event => "event",
            Kind::Error => "error",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Kind, ProtoError> {
        match s {
            "request" => Ok(Kind::Request),
            "reply" => Ok(Kind::Reply),
            "event" => Ok(Kind::Event),
            "error" => Ok(Kind::Error),
            other => Err(ProtoError::invalid(
                "kind",
                format!("'{other}' is not request, reply, event or error"),
            )),
        }
    }
}

/// Who sent an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Sending node's id.
    pub node: String,
    /// The blade it held, if any.
    pub blade: Option<String>,
    /// The sending application (peerlet type).
    pub app: String,
    /// The sending application instance.
    pub instance: Option<Uuid>,
}

/// Where an envelope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node(s) it is for.
    pub to: Destination,
    /// The application (peerlet type) it is for.
    pub app: Option<String>,
    /// The application instance it is for.
    pub instance: Option<Uuid>,
}

/// The addressee of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One node, by id.
    Node(String),
    /// Whichever node holds this blade now.
    Blade(String),
    /// Every member of a named group.
    Group(String),
    /// Every member.
    Broadcast,
}

impl Destination {
    /// The XML element name.
    pub fn element(&self) -> &'static str {
        match self {
            Destination::Node(_) => "node",
            Destination::Blade(_) => "blade",
            Destination::Group(_) => "group",
            Destination::Broadcast => "broadcast",
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Node(n) | Destination::Blade(n) | Destination::Group(n) => {
                write!(f, "{}:{n}", self.element())
            }
            Destination::Broadcast => f.write_str("broadcast"),
        }
    }
}

/// Arbitrary namespaced XML kept verbatim: the exact bytes between `<payload>` and `</payload>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(String);

impl Payload {
    /// Checks that `xml` is a well-formed fragment without DTD whose top-level elements are
    /// namespaced (outside the envelope namespace), and wraps it.
    pub fn new(xml: impl Into<String>) -> Result<Payload, ProtoError> {
        let xml = xml.into();
        xml::check_fragment(&xml, &Limits::default())?;
        Ok(Payload(xml))
    }

    /// No payload.
    pub fn empty() -> Payload {
        Payload(String::new())
    }

    /// The raw XML.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn trusted(xml: String) -> Payload {
        Payload(xml)
    }
}

/// One message: metadata plus a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique id; duplicates are dropped by the router.
    pub id: Uuid,
    /// Request, reply, event or error.
    pub kind: Kind,
    /// Hops left; decremented per hop, dropped at 0, clamped to [`MAX_TTL`] on receipt.
    pub ttl: u8,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Who sent it.
    pub sender: Sender,
    /// Where it goes.
    pub target: Target,
    /// For replies and errors: the request's id.
    pub correlation: Option<Uuid>,
    /// The holder epoch of the sender's blade, when it holds one (fencing).
    pub epoch: Option<u64>,
    /// The application's XML.
    pub payload: Payload,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Envelope {
    /// A new request with a fresh id, the maximum TTL and the current time.
    pub fn request(sender: Sender, target: Target, payload: Payload) -> Envelope {
        Envelope {
            id: Uuid::new_v4(),
            kind: Kind::Request,
            ttl: MAX_TTL,
            created_ms: now_ms(),
            sender,
            target,
            correlation: None,
            epoch: None,
            payload,
        }
    }

    /// An answer (`kind` is usually reply or error) addressed to this envelope's sender.
    pub fn reply_to(&self, sender: Sender, kind: Kind, payload: Payload) -> Envelope {
        Envelope {
            id: Uuid::new_v4(),
            kind,
            ttl: MAX_TTL,
            created_ms: now_ms(),
            target: Target {
                to: Destination::Node(self.sender.node.clone()),
                app: Some(self.sender.app.clone()),
                instance: self.sender.instance,
            },
            sender,
            correlation: Some(self.id),
            epoch: None,
            payload,
        }
    }

    /// Serializes to XML.
    pub fn to_xml(&self) -> String {
        let mut s = String::with_capacity(256 + self.payload.0.len());
        s.push_str("<envelope xmlns=\"");
        s.push_str(NAMESPACE);
        s.push('"');
        attr(&mut s, "id", &self.id.to_string());
        attr(&mut s, "kind", self.kind.as_str());
        attr(&mut s, "ttl", &self.ttl.to_string());
        attr(&mut s, "created", &self.created_ms.to_string());
        if let Some(c) = self.correlation {
            attr(&mut s, "correlation", &c.to_string());
        }
        if let Some(e) = self.epoch {
            attr(&mut s, "epoch", &e.to_string());
        }
        s.push_str("><sender");
        attr(&mut s, "node", &self.sender.node);
        if let Some(b) = &self.sender.blade {
            attr(&mut s, "blade", b);
        }
        attr(&mut s, "app", &self.sender.app);
        if let Some(i) = self.sender.instance {
            attr(&mut s, "instance", &i.to_string());
        }
        s.push_str("/><target");
        if let Some(a) = &self.target.app {
            attr(&mut s, "app", a);
        }
        if let Some(i) = self.target.instance {
            attr(&mut s, "instance", &i.to_string());
        }
        s.push('>');
        let el = self.target.to.element();
        match &self.target.to {
            Destination::Node(n) | Destination::Blade(n) | Destination::Group(n) => {
                s.push_str(&format!("<{el}>{}</{el}>", escape(n.as_str())));
            }
            Destination::Broadcast => s.push_str("<broadcast/>"),
        }
        s.push_str("</target><payload>");
        s.push_str(&self.payload.0);
        s.push_str("</payload></envelope>");
        s
    }

    /// Parses and checks an envelope; see the module docs for what is refused.
    pub fn from_xml(bytes: &[u8], limits: &Limits) -> Result<Envelope, ProtoError> {
        xml::parse_envelope(bytes, limits)
    }
}

fn attr(s: &mut String, name: &str, value: &str) {
    s.push(' ');
    s.push_str(name);
    s.push_str("=\"");
    s.push_str(&escape(value));
    s.push('"');
}
