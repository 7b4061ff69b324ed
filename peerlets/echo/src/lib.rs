//! `echo`: answers every request with its own payload, for tests and benchmarks.
//!
//! Two requests in its namespace ([`NAMESPACE`]) say more: `<whoami/>` answers where the request
//! landed (node, blade, instance, the TTL it arrived with), `<count/>` how many other envelopes this
//! instance has received, which is how tests check "exactly once", and `<members/>` the
//! directory of online members the agent gives peerlets.
#![deny(missing_docs)]

use dci_peerlet::{escape, Context, Envelope, Kind, Payload, Peerlet, PeerletType, Refusal, Uuid};

/// The echo peerlet's namespace.
pub const NAMESPACE: &str = "urn:dci:echo:1";
/// Its application type.
pub const APP: &str = "echo";

/// Makes echo instances.
pub struct EchoType;

impl PeerletType for EchoType {
    fn app(&self) -> &str {
        APP
    }

    fn create(&self, _instance: Uuid) -> Box<dyn Peerlet> {
        Box::new(Echo { received: 0 })
    }

    /// Echo changes nothing but its instance's count: a helper may answer all of it.
    fn read_only(&self) -> &[&str] {
        &["*"]
    }
}

/// One echo instance.
pub struct Echo {
    received: u64,
}

impl Peerlet for Echo {
    fn handle(&mut self, env: &Envelope, ctx: &mut Context<'_>) -> Result<(), Refusal> {
        let body = env.payload.as_str();
        let mine = body.contains(NAMESPACE);
        let before = self.received;
        // A count question is not counted, so that asking again is harmless.
        if !(mine && body.contains("<count")) {
            self.received += 1;
        }
        if env.kind != Kind::Request {
            return Ok(());
        }
        let payload = if mine && body.contains("<whoami") {
            let id = ctx.identity();
            Payload::new(format!(
                "<here xmlns=\"{NAMESPACE}\" node=\"{}\" blade=\"{}\" instance=\"{}\" ttl=\"{}\"/>",
                escape(&id.node),
                escape(id.blade.as_deref().unwrap_or("")),
                id.instance,
                env.ttl
            ))
        } else if mine && body.contains("<members") {
            // The directory the agent gives peerlets: who is online now, this node first.
            let mut xml = format!("<members xmlns=\"{NAMESPACE}\">");
            for m in ctx.directory().iter() {
                xml.push_str(&format!(
                    "<member node=\"{}\" blade=\"{}\" local=\"{}\"/>",
                    escape(&m.node),
                    escape(m.blade.as_deref().unwrap_or("")),
                    m.local
                ));
            }
            xml.push_str("</members>");
            Payload::new(xml)
        } else if mine && body.contains("<count") {
            Payload::new(format!(
                "<count xmlns=\"{NAMESPACE}\" received=\"{before}\"/>"
            ))
        } else {
            Ok(env.payload.clone())
        };
        let payload = payload.map_err(|e| Refusal::new("bad-payload", e.to_string()))?;
        ctx.reply(env, payload);
        Ok(())
    }
}
