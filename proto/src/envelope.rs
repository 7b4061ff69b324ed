//! The envelope as a value: who sent it, where it goes, what it is, and its payload.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::error::shown;
use crate::{codec, xml, Limits, ProtoError, MAX_TTL};

/// What an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Asks for something; answered by a reply or an error.
    Request,
    /// Answers a request; `correlation` names it.
    Reply,
    /// Tells something; no answer is expected.
    Event,
    /// Says that a request failed; `correlation` names it.
    Error,
}

impl Kind {
    /// The XML spelling: `request`, `reply`, `event` or `error`.
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

    /// Parses the XML spelling (exactly; no case folding, no whitespace).
    fn from_str(s: &str) -> Result<Kind, ProtoError> {
        match s {
            "request" => Ok(Kind::Request),
            "reply" => Ok(Kind::Reply),
            "event" => Ok(Kind::Event),
            "error" => Ok(Kind::Error),
            other => Err(ProtoError::invalid(
                "kind",
                format!("{} is not request, reply, event or error", shown(other)),
            )),
        }
    }
}

/// Who sent an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The sending node's id (its libp2p peer id, or a local client's name on the control
    /// socket). Non-empty.
    pub node: String,
    /// The blade the sending node holds, if it holds one. Non-empty when present.
    pub blade: Option<String>,
    /// The sending application (peerlet type), e.g. `exec` or `control`. Non-empty.
    pub app: String,
    /// The sending application instance, when there may be several.
    pub instance: Option<Uuid>,
}

/// Where an envelope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node or nodes it is for.
    pub to: Destination,
    /// The application (peerlet type) it is for; none for the agent itself. Non-empty when
    /// present.
    pub app: Option<String>,
    /// The application instance it is for.
    pub instance: Option<Uuid>,
}

/// The addressee of an envelope; exactly one per envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One node, by id.
    Node(String),
    /// Whichever node holds this blade now.
    Blade(String),
    /// Every member of a named group.
    Group(String),
    /// Every member of the cluster.
    Broadcast,
}

impl Destination {
    /// The XML element name: `node`, `blade`, `group` or `broadcast`.
    pub fn element(&self) -> &'static str {
        match self {
            Destination::Node(_) => "node",
            Destination::Blade(_) => "blade",
            Destination::Group(_) => "group",
            Destination::Broadcast => "broadcast",
        }
    }

    /// The node id, blade or group name; `None` for a broadcast.
    pub fn name(&self) -> Option<&str> {
        match self {
            Destination::Node(n) | Destination::Blade(n) | Destination::Group(n) => Some(n),
            Destination::Broadcast => None,
        }
    }
}

impl fmt::Display for Destination {
    /// `node:ID`, `blade:NAME`, `group:NAME` or `broadcast`, the element names of the XML.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}:{name}", self.element()),
            None => f.write_str(self.element()),
        }
    }
}

impl FromStr for Destination {
    type Err = ProtoError;

    /// Parses what [`Display`](fmt::Display) writes; the name must be non-empty.
    fn from_str(s: &str) -> Result<Destination, ProtoError> {
        let bad = |reason: String| ProtoError::invalid("destination", reason);
        match s.split_once(':') {
            None if s == "broadcast" => Ok(Destination::Broadcast),
            Some((_, "")) => Err(bad(format!("{} names no one", shown(s)))),
            Some(("node", name)) => Ok(Destination::Node(name.to_owned())),
            Some(("blade", name)) => Ok(Destination::Blade(name.to_owned())),
            Some(("group", name)) => Ok(Destination::Group(name.to_owned())),
            Some(_) | None => Err(bad(format!(
                "{} is not node:ID, blade:NAME, group:NAME or broadcast",
                shown(s)
            ))),
        }
    }
}

/// Arbitrary namespaced XML kept verbatim: the exact bytes between `<payload>` and `</payload>`,
/// CDATA sections, comments and namespace declarations included.
///
/// A `Payload` is always a well-formed XML fragment without DTD whose top-level elements each sit
/// in a namespace of their own (not the envelope's); text may surround them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(String);

impl Payload {
    /// Checks `xml` under the default [`Limits`] and wraps it; see [`Payload::with_limits`].
    pub fn new(xml: impl Into<String>) -> Result<Payload, ProtoError> {
        Payload::with_limits(xml, &Limits::default())
    }

    /// Checks that `xml` is a well-formed fragment (no DTD, no XML declaration, nesting within
    /// `limits.max_depth`, at most `limits.max_payload_bytes`) whose top-level elements each
    /// declare a namespace other than [`NAMESPACE`](crate::NAMESPACE), and wraps it unchanged.
    pub fn with_limits(xml: impl Into<String>, limits: &Limits) -> Result<Payload, ProtoError> {
        let xml = xml.into();
        codec::check_payload(&xml, limits)?;
        Ok(Payload(xml))
    }

    /// No payload.
    pub fn empty() -> Payload {
        Payload(String::new())
    }

    /// The XML, exactly as received or given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether there is no payload at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The XML, exactly as received or given.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Wraps XML this crate built itself, escaping every value it inserted.
    pub(crate) fn trusted(xml: String) -> Payload {
        Payload(xml)
    }
}

/// One message: a header (id, kind, TTL, time, sender, target, correlation, epoch) and a payload.
///
/// [`to_xml`](Envelope::to_xml) and [`from_xml`](Envelope::from_xml) round-trip every envelope
/// that passes [`check`](Envelope::check): names non-empty and made of characters XML can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// A unique id; routers drop an envelope whose id they have seen.
    pub id: Uuid,
    /// Request, reply, event or error.
    pub kind: Kind,
    /// Hops left: decremented per hop, dropped at 0, clamped to [`MAX_TTL`] on receipt.
    pub ttl: u8,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Who sent it.
    pub sender: Sender,
    /// Where it goes.
    pub target: Target,
    /// For replies and errors: the id of the request they answer.
    pub correlation: Option<Uuid>,
    /// The holder epoch of the sender's blade, when it holds one; receivers refuse a stale epoch
    /// (fencing).
    pub epoch: Option<u64>,
    /// The application's XML.
    pub payload: Payload,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Envelope {
    /// A new request: a fresh v4 id, TTL [`MAX_TTL`], created now, no correlation or epoch.
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

    /// An answer to this envelope (`kind` is usually [`Kind::Reply`] or [`Kind::Error`]): a fresh
    /// id, TTL [`MAX_TTL`], created now, addressed to this envelope's sender node, application and
    /// instance, with `correlation` set to this envelope's id. The epoch is left empty; set it when
    /// the answering node holds a blade.
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

    /// Serializes the envelope: one line, attribute values and names escaped. Characters XML
    /// cannot carry at all (C0 controls other than tab, CR, LF; U+FFFE, U+FFFF) are written as
    /// U+FFFD; [`check`](Envelope::check) finds them beforehand.
    pub fn to_xml(&self) -> String {
        codec::write(self)
    }

    /// Parses and checks an envelope. The size is checked before anything else; a DTD anywhere,
    /// a wrong namespace, a missing, unknown or invalid header field, a payload that is too large
    /// or too deep, and anything that is not well-formed XML are refused. The TTL is returned as
    /// received (0 to 255); clamping is the router's business.
    pub fn from_xml(bytes: &[u8], limits: &Limits) -> Result<Envelope, ProtoError> {
        codec::read(bytes, limits)
    }

    /// Checks what the types cannot: names are non-empty and hold only characters XML can carry.
    /// An envelope that passes round-trips through [`to_xml`](Envelope::to_xml) and
    /// [`from_xml`](Envelope::from_xml) unchanged.
    pub fn check(&self) -> Result<(), ProtoError> {
        let names = [
            ("sender/@node", Some(self.sender.node.as_str())),
            ("sender/@blade", self.sender.blade.as_deref()),
            ("sender/@app", Some(self.sender.app.as_str())),
            ("target/@app", self.target.app.as_deref()),
            ("target destination", self.target.to.name()),
        ];
        for (field, value) in names {
            match value {
                Some("") => return Err(ProtoError::invalid(field, "empty")),
                Some(v) if !v.chars().all(xml::is_xml_char) => {
                    return Err(ProtoError::invalid(
                        field,
                        format!("{} holds a character XML cannot carry", shown(v)),
                    ))
                }
                Some(_) | None => {}
            }
        }
        Ok(())
    }
}
