//! What the control socket does with an envelope that is not a control command: route it as
//! sent by this node's operator and answer with everything that came back, at once or, for a
//! `<route>` request, as it comes.
//!
//! A `<route xmlns="urn:dci:answers:1" wait-ms="N">ENVELOPE</route>` control request routes
//! ENVELOPE and streams its answers: reply frames `<answers request more="true">` holding the
//! answers that arrived since the last frame, in arrival order, then a last `<answers request
//! expected="N"/>` once every destination answered or the wait ran out (an error frame
//! `overflow` instead if the client read so slowly that answers were dropped).

use std::time::Duration;

use dci_peerlet::error_payload;
use dci_proto::{frame, Envelope, Kind, Limits, Payload, Sender};
use tokio::io::AsyncWrite;

use super::{MessengerHandle, Streamed, ANSWERS_NAMESPACE};

/// Answer XML gathered into one streamed frame at most (one answer may pass it).
const FRAME_BATCH: usize = 256 << 10;

/// Routes `request` for a local client and wraps its answers in one reply (see
/// [`Answers::to_payload`](super::Answers::to_payload)).
pub async fn answer(me: &Sender, request: Envelope, messenger: &MessengerHandle) -> Envelope {
    let original = request.clone();
    match messenger.request(request).await {
        Some(answers) => original.reply_to(me.clone(), Kind::Reply, answers.to_payload()),
        None => stopping(me, &original),
    }
}

fn stopping(me: &Sender, request: &Envelope) -> Envelope {
    request.reply_to(
        me.clone(),
        Kind::Error,
        error_payload("stopping", "the agent is shutting down"),
    )
}

/// The payload of a control request that routes `env` and streams its answers for `wait`.
pub fn route_payload(env: &Envelope, wait: Duration) -> Result<Payload, dci_proto::ProtoError> {
    Payload::new(format!(
        "<route xmlns=\"{ANSWERS_NAMESPACE}\" wait-ms=\"{}\">{}</route>",
        wait.as_millis(),
        env.to_xml()
    ))
}

/// The envelope and wait of a `<route>` request; `None` if `request` is not one.
pub fn route_of(request: &Envelope) -> Option<Result<(Envelope, Duration), String>> {
    let xml = request.payload.as_str().trim();
    if !xml.starts_with("<route") || !xml.contains(ANSWERS_NAMESPACE) {
        return None;
    }
    let wait = dci_peerlet::first_attribute(&request.payload, "wait-ms")
        .and_then(|w| w.parse().ok())
        .map(Duration::from_millis);
    let inner = xml
        .find('>')
        .zip(xml.rfind("</route>"))
        .and_then(|(open, close)| xml.get(open + 1..close));
    Some(match (wait, inner) {
        (None, _) => Err("<route> needs wait-ms, a number of milliseconds".into()),
        (_, None) => Err("<route> holds no envelope".into()),
        (Some(wait), Some(inner)) => {
            Envelope::from_xml(inner.trim().as_bytes(), &Limits::default())
                .map(|env| (env, wait))
                .map_err(|e| e.to_string())
        }
    })
}

/// Carries out a `<route>` request (see the module docs), writing its frames to `out`.
pub async fn stream(
    me: &Sender,
    request: &Envelope,
    route: Result<(Envelope, Duration), String>,
    messenger: &MessengerHandle,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<(), frame::FrameError> {
    let reply = |kind: Kind, payload: Payload| request.reply_to(me.clone(), kind, payload);
    let (env, wait) = match route {
        Ok(r) => r,
        Err(e) => {
            let error = reply(Kind::Error, error_payload("bad-command", &e));
            return frame::write_frame(out, error.to_xml().as_bytes()).await;
        }
    };
    let Some(mut answers) = messenger.stream(env, wait).await else {
        return frame::write_frame(out, stopping(me, request).to_xml().as_bytes()).await;
    };
    let limits = Limits {
        max_payload_bytes: 4 * FRAME_BATCH + (2 << 20),
        max_envelope_bytes: 4 * FRAME_BATCH + (2 << 20),
        ..Limits::default()
    };
    let open = format!(
        "<answers xmlns=\"{ANSWERS_NAMESPACE}\" request=\"{}\"",
        request.id
    );
    let mut end = None;
    while end.is_none() {
        let Some(first) = answers.rx.recv().await else {
            return frame::write_frame(out, stopping(me, request).to_xml().as_bytes()).await;
        };
        // Whatever else has arrived goes in the same frame.
        let mut xml = format!("{open} more=\"true\">");
        let mut count = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Streamed::Answer(a) => {
                    answers.taken(&a);
                    count += 1;
                    xml.push_str(&a.to_xml());
                }
                Streamed::End {
                    expected,
                    overflowed,
                } => {
                    end = Some((expected, overflowed));
                    break;
                }
            }
            if xml.len() < FRAME_BATCH {
                next = answers.rx.try_recv().ok();
            }
        }
        xml.push_str("</answers>");
        if count > 0 {
            let payload = Payload::with_limits(xml, &limits)
                .unwrap_or_else(|e| error_payload("internal", &e.to_string()));
            frame::write_frame(out, reply(Kind::Reply, payload).to_xml().as_bytes()).await?;
        }
    }
    let last = match end {
        Some((_, true)) => reply(
            Kind::Error,
            error_payload(
                "overflow",
                "answers were dropped: the client read them too slowly",
            ),
        ),
        Some((expected, false)) => reply(
            Kind::Reply,
            Payload::new(format!("{open} expected=\"{expected}\"/>"))
                .unwrap_or_else(|e| error_payload("internal", &e.to_string())),
        ),
        None => stopping(me, request),
    };
    frame::write_frame(out, last.to_xml().as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_proto::{Destination, Target};

    fn envelope(payload: Payload) -> Envelope {
        Envelope::request(
            Sender {
                node: "dcish".into(),
                blade: None,
                app: "control".into(),
                instance: None,
            },
            Target {
                to: Destination::Group("set:b1,b2".into()),
                app: Some("exec".into()),
                instance: None,
            },
            payload,
        )
    }

    #[test]
    fn a_route_request_carries_its_envelope_and_wait_and_bad_ones_say_why() {
        let inner = envelope(Payload::new("<x xmlns=\"urn:x\">a &amp; b</x>").unwrap());
        let outer = envelope(route_payload(&inner, Duration::from_millis(4500)).unwrap());
        let (env, wait) = route_of(&outer).unwrap().unwrap();
        assert_eq!((env, wait), (inner, Duration::from_millis(4500)));

        let plain = envelope(Payload::new("<nodes xmlns=\"urn:dci:control:1\"/>").unwrap());
        assert!(route_of(&plain).is_none());
        for (payload, says) in [
            (
                format!("<route xmlns=\"{ANSWERS_NAMESPACE}\"><x/></route>"),
                "wait-ms",
            ),
            (
                format!("<route xmlns=\"{ANSWERS_NAMESPACE}\" wait-ms=\"5\"/>"),
                "no envelope",
            ),
            (
                format!("<route xmlns=\"{ANSWERS_NAMESPACE}\" wait-ms=\"5\"><y xmlns=\"urn:y\"/></route>"),
                "root",
            ),
        ] {
            let bad = envelope(Payload::new(payload).unwrap());
            let e = route_of(&bad).unwrap().unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
