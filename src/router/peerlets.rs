//! The `peerlets` app every router answers itself: the peerlet types this node offers and the
//! instances running, and stopping them, for `dcish peerlets`.
//!
//! `<list xmlns="urn:dci:peerlets:1"/>` is answered `<peerlets><type app/>...<instance app id
//! idle-ms/>...</peerlets>` (at most [`MAX_LISTED`] instances, `cut` on the root counts the rest); `<stop app="A" [instance="GUID"]/>` is answered `<stopped
//! count="N"/>`, for this node's operator or one named in `exec_operators` (the envelope comes
//! straight from its sender: the app is authenticated). Instances start on demand, so starting
//! one is sending it an envelope.

use std::time::Duration;

use dci_peerlet::{error_payload, escape, first_attribute, Envelope, Kind, Payload, Sender, Uuid};

use crate::peerlet_host::Host;

/// The app name.
pub const PEERLETS_APP: &str = "peerlets";
/// The namespace of its requests and answers.
pub const PEERLETS_NAMESPACE: &str = "urn:dci:peerlets:1";
/// Instances listed in one answer at most, the least idle first, so that it fits an envelope
/// (a host may run 10,000); `cut` says how many were left out.
const MAX_LISTED: usize = 2_000;

/// The answer to `env`, a request to the `peerlets` app, from `me`.
pub fn answer(
    host: &mut Host,
    env: &Envelope,
    me: Sender,
    operators: &[String],
    now: Duration,
) -> Envelope {
    match command(host, env, &me.node, operators, now) {
        Ok(xml) => {
            let payload =
                Payload::new(xml).unwrap_or_else(|e| error_payload("internal", &e.to_string()));
            env.reply_to(me, Kind::Reply, payload)
        }
        Err((code, message)) => env.reply_to(me, Kind::Error, error_payload(code, &message)),
    }
}

fn command(
    host: &mut Host,
    env: &Envelope,
    local: &str,
    operators: &[String],
    now: Duration,
) -> Result<String, (&'static str, String)> {
    let body = env.payload.as_str().trim_start();
    if !body.contains(PEERLETS_NAMESPACE) {
        return Err(("bad-payload", format!("expected {PEERLETS_NAMESPACE}")));
    }
    if body.starts_with("<list") {
        let mut running = host.running(now);
        let cut = running.len().saturating_sub(MAX_LISTED);
        if cut > 0 {
            running.sort_by_key(|r| r.2);
            running.truncate(MAX_LISTED);
            running.sort();
        }
        let mut xml = format!("<peerlets xmlns=\"{PEERLETS_NAMESPACE}\" cut=\"{cut}\">");
        for app in host.apps() {
            xml.push_str(&format!("<type app=\"{}\"/>", escape(&app)));
        }
        for (app, id, idle) in running {
            xml.push_str(&format!(
                "<instance app=\"{}\" id=\"{id}\" idle-ms=\"{}\"/>",
                escape(&app),
                idle.as_millis()
            ));
        }
        xml.push_str("</peerlets>");
        return Ok(xml);
    }
    if !body.starts_with("<stop") {
        return Err(("bad-payload", "expected <list/> or <stop/>".into()));
    }
    let s = &env.sender;
    let allowed = s.app == "control"
        && (s.node == local
            || operators
                .iter()
                .any(|o| o == &s.node || s.blade.as_deref() == Some(o.as_str())));
    if !allowed {
        return Err((
            "not-authorized",
            format!(
                "{} is not an operator allowed to stop peerlets here",
                s.blade.as_deref().unwrap_or(&s.node)
            ),
        ));
    }
    let app = first_attribute(&env.payload, "app")
        .ok_or_else(|| ("bad-payload", "<stop/> names no app".to_string()))?;
    let instance = match first_attribute(&env.payload, "instance") {
        None => None,
        Some(i) => {
            Some(Uuid::parse_str(i).map_err(|_| ("bad-payload", format!("{i:?} is not a GUID")))?)
        }
    };
    let count = host.stop(app, instance);
    Ok(format!(
        "<stopped xmlns=\"{PEERLETS_NAMESPACE}\" count=\"{count}\"/>"
    ))
}
