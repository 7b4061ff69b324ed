//! The peerlet API: what an application plugged into a DCI agent sees of the mesh.
//!
//! The one design decision: **peerlets are not network aware.** This crate depends on the
//! envelope format and nothing that can open a socket, so a peerlet crate (which depends only on
//! this one) cannot reach the network except through the agent. A peerlet receives envelopes in
//! [`Peerlet::handle`] and answers through the [`Context`]: reply, send to a blade or a node,
//! multicast to a group, broadcast, and read the [`Directory`] of online members. The agent
//! fills in the sender (node, blade, app type, instance GUID), routes what the peerlet emits,
//! and starts and stops instances.
//!
//! `handle` runs on the agent's routing task and must return quickly. A peerlet with slow work
//! (a process to run, a file to read) takes a [`Later`] from the context, does the work on a
//! thread of its own, and sends its answer through it when done.
#![deny(missing_docs)]

use std::sync::Arc;

pub use dci_proto::{Destination, Envelope, Kind, Payload, ProtoError, Sender, Target, MAX_TTL};
pub use uuid::Uuid;

/// One online member of the mesh, as a peerlet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub node: String,
    /// The blade it holds, if any.
    pub blade: Option<String>,
    /// Whether this is the local node.
    pub local: bool,
}

/// The members the local agent considers reachable now, local node first.
pub type Directory = Arc<Vec<Member>>;

/// An application plugged into the agent. One value of this type is one instance.
pub trait Peerlet: Send + 'static {
    /// Handles one envelope addressed to this instance. Whatever it emits through `ctx` is routed
    /// when it returns. An `Err` is sent back to the envelope's sender as an error envelope (for
    /// requests) or logged (for the rest); the instance keeps running.
    fn handle(&mut self, env: &Envelope, ctx: &mut Context<'_>) -> Result<(), Refusal>;
}

/// Makes instances of one peerlet type.
pub trait PeerletType: Send + Sync + 'static {
    /// The application type this makes, e.g. `echo` (the `app` of envelopes for it).
    fn app(&self) -> &str;
    /// A new instance, with its GUID.
    fn create(&self, instance: Uuid) -> Box<dyn Peerlet>;
    /// The message types (see [`message_type`]) this peerlet answers without changing anything,
    /// `*` for all: only these may be served by a helper of a loaded blade, which holds a copy of
    /// the blade's data but none of its writes. None by default.
    fn read_only(&self) -> &[&str] {
        &[]
    }
}

/// The message type of a payload: its root element's local name (`read` for
/// `<fs:read xmlns:fs="…"/>`), if it has one.
pub fn message_type(payload: &Payload) -> Option<&str> {
    let mut xml = payload.as_str();
    loop {
        let start = xml.find('<')?;
        xml = &xml[start + 1..];
        // Skip declarations, processing instructions and comments.
        if !xml.starts_with(['?', '!']) {
            break;
        }
    }
    let end = xml
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(xml.len());
    let name = &xml[..end];
    let local = name.rsplit(':').next().unwrap_or(name);
    (!local.is_empty()).then_some(local)
}

/// Whether `message_type` is among the `declared` read-only types (`*` declares all).
pub fn is_read_only<S: AsRef<str>>(declared: &[S], message_type: &str) -> bool {
    declared
        .iter()
        .any(|d| d.as_ref() == "*" || d.as_ref() == message_type)
}

/// Why a peerlet refused an envelope: a short code and a one-line message, sent back in an error
/// envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short machine-readable code, e.g. `bad-payload`, `not-authorized`.
    pub code: String,
    /// What a human should read.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The error payload carrying this refusal.
    pub fn to_payload(&self) -> Payload {
        error_payload(&self.code, &self.message)
    }
}

/// The error payload every agent and peerlet uses: `<error xmlns="urn:dci:control:1"
/// code="...">message</error>` (the control namespace's, so that `dcish` reads every refusal the
/// same way).
pub use dci_proto::control::{error_from_payload, error_payload};

/// The payloads of the `fs` peerlet, which `dcish` speaks too.
pub use dci_proto::fs;

/// Admits `sender` when it is an operator (a `control` or `task` app, i.e. `dcish` or a task
/// runner) of a node or blade named in `operators`; else a `not-authorized` refusal saying it
/// may not `what` here. Peerlets that act on the node (run commands, touch files) check this.
pub fn check_operator(sender: &Sender, operators: &[String], what: &str) -> Result<(), Refusal> {
    let allowed = matches!(sender.app.as_str(), "control" | "task")
        && operators
            .iter()
            .any(|o| *o == sender.node || sender.blade.as_deref() == Some(o.as_str()));
    if allowed {
        return Ok(());
    }
    Err(Refusal::new(
        "not-authorized",
        format!(
            "{} ({}) is not an operator allowed to {what} here",
            sender.blade.as_deref().unwrap_or(&sender.node),
            sender.app
        ),
    ))
}

/// Escapes text for an XML attribute value or element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML cannot carry become the replacement character.
            c if c < ' ' && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A sink for envelopes a peerlet emits after `handle` returned (see [`Later`]).
pub trait Outbox: Send + Sync + 'static {
    /// Hands an envelope to the agent for routing. Returns false when the agent is stopping.
    fn post(&self, env: Envelope) -> bool;
}

/// Who an instance is: the sender fields of everything it emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The local node id.
    pub node: String,
    /// The blade the local node holds, if any.
    pub blade: Option<String>,
    /// The holder epoch of that blade.
    pub epoch: Option<u64>,
    /// This peerlet's application type.
    pub app: String,
    /// This instance's GUID.
    pub instance: Uuid,
}

impl Identity {
    fn sender(&self) -> Sender {
        Sender {
            node: self.node.clone(),
            blade: self.blade.clone(),
            app: self.app.clone(),
            instance: Some(self.instance),
        }
    }

    fn stamp(&self, mut env: Envelope) -> Envelope {
        env.epoch = self.epoch;
        env
    }

    /// An answer to `to` (kind [`Kind::Reply`] or [`Kind::Error`]) from this instance.
    pub fn reply(&self, to: &Envelope, kind: Kind, payload: Payload) -> Envelope {
        self.stamp(to.reply_to(self.sender(), kind, payload))
    }

    /// A new envelope of `kind` from this instance.
    pub fn envelope(&self, kind: Kind, target: Target, payload: Payload) -> Envelope {
        let mut env = Envelope::request(self.sender(), target, payload);
        env.kind = kind;
        self.stamp(env)
    }
}

/// What a peerlet can do while it handles an envelope.
pub struct Context<'a> {
    identity: &'a Identity,
    directory: &'a Directory,
    outbox: &'a Arc<dyn Outbox>,
    emitted: &'a mut Vec<Envelope>,
}

impl<'a> Context<'a> {
    /// A context for an instance; the agent's peerlet host makes these.
    pub fn new(
        identity: &'a Identity,
        directory: &'a Directory,
        outbox: &'a Arc<dyn Outbox>,
        emitted: &'a mut Vec<Envelope>,
    ) -> Context<'a> {
        Context {
            identity,
            directory,
            outbox,
            emitted,
        }
    }

    /// Who this instance is.
    pub fn identity(&self) -> &Identity {
        self.identity
    }

    /// The members online now, local node first.
    pub fn directory(&self) -> &Directory {
        self.directory
    }

    /// Replies to `to` with `payload`. Returns the reply's id.
    pub fn reply(&mut self, to: &Envelope, payload: Payload) -> Uuid {
        self.emit(self.identity.reply(to, Kind::Reply, payload))
    }

    /// Answers `to` with an error envelope.
    pub fn reply_error(&mut self, to: &Envelope, refusal: &Refusal) -> Uuid {
        self.emit(self.identity.reply(to, Kind::Error, refusal.to_payload()))
    }

    /// Sends a new envelope of `kind` to `to`, for application `app` (and `instance`, if given).
    pub fn send(
        &mut self,
        kind: Kind,
        to: Destination,
        app: &str,
        instance: Option<Uuid>,
        payload: Payload,
    ) -> Uuid {
        let target = Target {
            to,
            app: Some(app.to_owned()),
            instance,
        };
        self.emit(self.identity.envelope(kind, target, payload))
    }

    /// Sends an event to every member of `group` running `app`.
    pub fn multicast(&mut self, group: &str, app: &str, payload: Payload) -> Uuid {
        self.send(
            Kind::Event,
            Destination::Group(group.to_owned()),
            app,
            None,
            payload,
        )
    }

    /// Sends an event to every member running `app`.
    pub fn broadcast(&mut self, app: &str, payload: Payload) -> Uuid {
        self.send(Kind::Event, Destination::Broadcast, app, None, payload)
    }

    /// Emits an envelope built by the peerlet itself; the agent routes it as it is.
    pub fn emit(&mut self, env: Envelope) -> Uuid {
        let id = env.id;
        self.emitted.push(env);
        id
    }

    /// A handle to send envelopes later, from another thread, after `handle` has returned.
    pub fn later(&self) -> Later {
        Later {
            identity: self.identity.clone(),
            outbox: Arc::clone(self.outbox),
        }
    }
}

/// Sends envelopes on behalf of an instance after its `handle` returned (slow work on a thread).
#[derive(Clone)]
pub struct Later {
    identity: Identity,
    outbox: Arc<dyn Outbox>,
}

impl Later {
    /// Who the envelopes come from.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Hands `env` to the agent. Returns false when the agent is stopping.
    pub fn post(&self, env: Envelope) -> bool {
        self.outbox.post(env)
    }

    /// Replies to `to` with `payload`, or an error with `refusal`.
    pub fn answer(&self, to: &Envelope, result: Result<Payload, Refusal>) -> bool {
        let env = match result {
            Ok(p) => self.identity.reply(to, Kind::Reply, p),
            Err(r) => self.identity.reply(to, Kind::Error, r.to_payload()),
        };
        self.post(env)
    }
}

/// Reads the value of attribute `name` on the first element of a payload (a light helper for
/// peerlets whose payload is one element with attributes). Entities are not expanded.
pub fn first_attribute<'p>(payload: &'p Payload, name: &str) -> Option<&'p str> {
    let xml = payload.as_str();
    let start = xml.find('<')?;
    let end = start + xml[start..].find('>')?;
    let tag = &xml[start..end];
    let mut rest = tag;
    while let Some(pos) = rest.find(name) {
        let before_ok = pos > 0 && rest.as_bytes()[pos - 1].is_ascii_whitespace();
        let after = &rest[pos + name.len()..];
        if before_ok {
            if let Some(value) = after.strip_prefix("=\"") {
                return value.find('"').map(|e| &value[..e]);
            }
        }
        rest = after;
    }
    None
}

/// The text content of the first element of a payload, if it holds only text (entities of the
/// five predefined kinds are decoded).
pub fn first_text(payload: &Payload) -> Option<String> {
    let xml = payload.as_str();
    let start = xml.find('<')?;
    let open_end = start + xml[start..].find('>')?;
    if xml[..open_end].ends_with('/') {
        return Some(String::new());
    }
    let body = &xml[open_end + 1..];
    let close = body.find("</")?;
    Some(unescape(&body[..close]))
}

/// Decodes the five predefined entities (the reverse of [`escape`]).
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_payload_carries_markup_in_its_message_safely() {
        let p = error_payload("bad", "a <b> & \"c\"");
        assert_eq!(
            error_from_payload(&p),
            Some(("bad".to_string(), "a <b> & \"c\"".to_string()))
        );
    }

    #[test]
    fn the_message_type_is_the_root_elements_local_name() {
        let p = |x: &str| Payload::new(x).unwrap();
        assert_eq!(
            message_type(&p("<read xmlns=\"urn:x\" offset=\"0\"/>")),
            Some("read")
        );
        assert_eq!(
            message_type(&p("<!-- c --><f:get xmlns:f=\"urn:x\"/>")),
            Some("get")
        );
        assert_eq!(message_type(&Payload::empty()), None);
        assert!(is_read_only(&["list", "read"], "read"));
        assert!(!is_read_only(&["list", "read"], "write"));
        assert!(is_read_only(&["*"], "anything"));
        assert!(!is_read_only::<&str>(&[], "read"));
    }

    #[test]
    fn attributes_and_text_of_the_first_element_are_read() {
        let p = Payload::new("<say xmlns=\"urn:x\" from=\"ann\">hi &amp; bye</say>").unwrap();
        assert_eq!(first_attribute(&p, "from"), Some("ann"));
        assert_eq!(first_attribute(&p, "to"), None);
        assert_eq!(first_text(&p).as_deref(), Some("hi & bye"));
    }
}
