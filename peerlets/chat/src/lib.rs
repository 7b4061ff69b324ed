//! `chat`: multi-session chat. Each session is one instance GUID on every node that takes part,
//! so two conversations (A and B, and A, B and C) are two instances on each end and their lines
//! never mix.
//!
//! Payloads (namespace [`NAMESPACE`]): `<say from="ann">text</say>` (an event or a request) adds a
//! line to the session; `<history/>` (a request) answers with the session's lines in order.
#![deny(missing_docs)]

use std::collections::VecDeque;

use dci_peerlet::{
    escape, first_attribute, first_text, Context, Envelope, Kind, Payload, Peerlet, PeerletType,
    Refusal, Uuid,
};

/// The chat peerlet's namespace.
pub const NAMESPACE: &str = "urn:dci:chat:1";
/// Its application type.
pub const APP: &str = "chat";
/// Lines kept per session; older ones are forgotten first.
pub const MAX_LINES: usize = 1000;
/// Longest line kept, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;

/// Makes chat sessions.
pub struct ChatType;

impl PeerletType for ChatType {
    fn app(&self) -> &str {
        APP
    }

    fn create(&self, _instance: Uuid) -> Box<dyn Peerlet> {
        Box::new(Chat::default())
    }
}

/// One chat session.
#[derive(Default)]
pub struct Chat {
    lines: VecDeque<(String, String)>,
}

impl Peerlet for Chat {
    fn handle(&mut self, env: &Envelope, ctx: &mut Context<'_>) -> Result<(), Refusal> {
        let body = env.payload.as_str();
        if !body.contains(NAMESPACE) {
            return Err(Refusal::new(
                "bad-payload",
                format!("chat expects <say> or <history> in {NAMESPACE}"),
            ));
        }
        if body.trim_start().starts_with("<say") {
            let from = first_attribute(&env.payload, "from")
                .unwrap_or(&env.sender.node)
                .to_owned();
            let text = first_text(&env.payload).unwrap_or_default();
            if text.len() > MAX_LINE_BYTES {
                return Err(Refusal::new(
                    "too-long",
                    "a chat line is at most 4096 bytes",
                ));
            }
            if self.lines.len() == MAX_LINES {
                self.lines.pop_front();
            }
            self.lines.push_back((from, text));
            if env.kind == Kind::Request {
                ctx.reply(env, Payload::empty());
            }
            Ok(())
        } else if body.trim_start().starts_with("<history") {
            let mut xml = format!("<history xmlns=\"{NAMESPACE}\">");
            for (from, text) in &self.lines {
                xml.push_str(&format!(
                    "<line from=\"{}\">{}</line>",
                    escape(from),
                    escape(text)
                ));
            }
            xml.push_str("</history>");
            let payload = Payload::new(xml).map_err(|e| Refusal::new("internal", e.to_string()))?;
            ctx.reply(env, payload);
            Ok(())
        } else {
            Err(Refusal::new(
                "bad-payload",
                "chat expects <say> or <history>",
            ))
        }
    }
}
