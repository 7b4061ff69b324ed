//! `dcish send`, `log` and `replay`: envelopes to peerlets anywhere in the mesh, and the message
//! log. The local agent routes what `dcish` sends as this node's operator (app `control`, so it
//! is logged by default) and answers with every reply and error that came back in time.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use clap::Args;
use dci_proto::{Destination, Envelope, Kind, Limits, Payload, Sender, Target};
use quick_xml::events::Event;
use serde_json::json;

use super::client::{Client, ClientError};

/// `dcish send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to: `blade:NAME`, `node:ID`, `group:NAME` (or `group:set:b1,b2`), `broadcast`, or a
    /// bare blade name.
    pub to: String,
    /// The target peerlet type.
    #[arg(long, default_value = "echo")]
    pub app: String,
    /// The payload: XML, `@FILE`, or `-` for standard input; none sends an empty payload.
    pub payload: Option<String>,
    /// The target instance GUID (a session), if any.
    #[arg(long)]
    pub instance: Option<uuid::Uuid>,
    /// Send an event (no answer expected) instead of a request.
    #[arg(long)]
    pub event: bool,
    /// Hops allowed; the agent clamps it to 9.
    #[arg(long, default_value_t = dci_proto::MAX_TTL)]
    pub ttl: u8,
}

/// `dcish log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only envelopes from or to this peerlet type.
    #[arg(long)]
    pub app: Option<String>,
    /// Only envelopes from this node id or blade.
    #[arg(long)]
    pub sender: Option<String>,
    /// Only envelopes to this destination (`blade:NAME`, ... or just the name).
    #[arg(long)]
    pub target: Option<String>,
    /// Only envelopes logged at or after this Unix time in milliseconds.
    #[arg(long)]
    pub since: Option<u64>,
    /// Only envelopes logged before this Unix time in milliseconds.
    #[arg(long)]
    pub until: Option<u64>,
    /// The newest this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `dcish replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Ids of logged envelopes to send again (new ids, linked to these in the log).
    #[arg(required = true)]
    pub ids: Vec<uuid::Uuid>,
    /// Send them here instead of their original destination.
    #[arg(long)]
    pub to: Option<String>,
}

/// A usage error: one line for the user.
pub(crate) fn usage(message: String) -> ClientError {
    ClientError::Refused {
        code: "usage".into(),
        message,
    }
}

/// Reads a destination as `dcish` spells it: a bare name is a blade.
pub fn destination(s: &str) -> Result<Destination, ClientError> {
    if s == "broadcast" || s.contains(':') {
        s.parse()
            .map_err(|e: dci_proto::ProtoError| usage(e.to_string()))
    } else if s.is_empty() {
        Err(usage("an empty destination".into()))
    } else {
        Ok(Destination::Blade(s.to_owned()))
    }
}

/// The sender of what `dcish` sends: this node's operator.
pub(crate) fn operator() -> Sender {
    Sender {
        node: "dcish".into(),
        blade: None,
        app: "control".into(),
        instance: None,
    }
}

fn payload_arg(arg: Option<&str>) -> Result<Payload, ClientError> {
    let text = match arg {
        None => return Ok(Payload::empty()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| usage(format!("cannot read the payload from stdin: {e}")))?;
            s
        }
        Some(a) if a.starts_with('@') => std::fs::read_to_string(&a[1..])
            .map_err(|e| usage(format!("cannot read {}: {e}", &a[1..])))?,
        Some(a) => a.to_owned(),
    };
    Payload::new(text.trim().to_owned()).map_err(|e| usage(format!("bad payload: {e}")))
}

/// One answer as printed.
fn answer_json(e: &Envelope) -> serde_json::Value {
    let error = dci_proto::control::error_from_payload(&e.payload);
    json!({
        "kind": e.kind.as_str(),
        "node": e.sender.node,
        "blade": e.sender.blade,
        "app": e.sender.app,
        "instance": e.sender.instance.map(|i| i.to_string()),
        "id": e.id.to_string(),
        "payload": e.payload.as_str(),
        "code": error.as_ref().map(|(c, _)| c.clone()),
        "message": error.map(|(_, m)| m),
    })
}

/// Runs `dcish send`: prints each answer; fails when any is an error or some never came.
pub async fn send(client: &mut Client, args: &SendArgs, json: bool) -> Result<String, ClientError> {
    let to = destination(&args.to)?;
    let payload = payload_arg(args.payload.as_deref())?;
    let mut env = Envelope::request(
        operator(),
        Target {
            to,
            app: Some(args.app.clone()),
            instance: args.instance,
        },
        payload,
    );
    env.ttl = args.ttl;
    if args.event {
        env.kind = Kind::Event;
    }
    let (expected, answers) = answers_of(client, &env).await?;
    let mut text = String::new();
    if json {
        let rows: Vec<_> = answers.iter().map(answer_json).collect();
        text = serde_json::to_string_pretty(&json!({
            "id": env.id.to_string(),
            "expected": expected,
            "answers": rows,
        }))
        .unwrap_or_default();
    } else {
        for a in &answers {
            let who = a
                .sender
                .blade
                .clone()
                .unwrap_or_else(|| a.sender.node.clone());
            match dci_proto::control::error_from_payload(&a.payload) {
                Some((code, message)) if a.kind == Kind::Error => text.push_str(&format!(
                    "{who} {}: error {code}: {message}\n",
                    a.sender.app
                )),
                _ => text.push_str(&format!("{who} {}: {}\n", a.sender.app, a.payload.as_str())),
            }
        }
        if args.event && answers.is_empty() {
            text.push_str(&format!("sent {}\n", env.id));
        }
    }
    let errors = answers.iter().filter(|a| a.kind == Kind::Error).count();
    if errors > 0 || answers.len() < expected {
        let missing = expected.saturating_sub(answers.len());
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        return Err(ClientError::Refused {
            code: "incomplete".into(),
            message: format!("{errors} error(s), {missing} destination(s) did not answer in time"),
        });
    }
    Ok(text.trim_end().to_owned())
}

/// Sends `env` and reads the `<answers>` it gets back.
pub(crate) async fn answers_of(
    client: &mut Client,
    env: &Envelope,
) -> Result<(usize, Vec<Envelope>), ClientError> {
    let reply = client.exchange(env).await?;
    let (attrs, answers) = read_answers(&reply)?;
    let expected = attrs
        .get("expected")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((expected, answers))
}

/// The attributes of the `<answers>` an agent replied with, and the envelopes inside.
fn read_answers(reply: &Envelope) -> Result<(HashMap<String, String>, Vec<Envelope>), ClientError> {
    let bad = |reason: String| ClientError::Refused {
        code: "bad-answer".into(),
        message: reason,
    };
    if reply.kind == Kind::Error {
        let (code, message) = dci_proto::control::error_from_payload(&reply.payload)
            .unwrap_or_else(|| ("error".into(), "refused".into()));
        return Err(ClientError::Refused { code, message });
    }
    let elements = children(reply.payload.as_str()).map_err(bad)?;
    let (attrs, inner) = elements
        .into_iter()
        .next()
        .ok_or_else(|| bad("no <answers> in the reply".into()))?;
    let limits = super::client::reply_limits();
    let mut answers = Vec::new();
    for (_, xml) in children(self::inner(inner)).map_err(bad)? {
        answers.push(Envelope::from_xml(xml.as_bytes(), &limits).map_err(|e| bad(e.to_string()))?);
    }
    Ok((attrs, answers))
}

/// Sends `env` for the agent to route and hands each answer to `each` as it arrives, for
/// `wait` at most (the agent stops waiting a little earlier); returns how many destinations
/// were expected to answer.
pub(crate) async fn stream_answers(
    client: &mut Client,
    env: &Envelope,
    wait: Duration,
    each: &tokio::sync::mpsc::Sender<Envelope>,
) -> Result<usize, ClientError> {
    let payload = crate::router::control::route_payload(env, wait)
        .map_err(|e| usage(format!("the command is too large: {e}")))?;
    let request = to_local(dci_proto::control::CONTROL_APP, payload);
    let limit = wait + Duration::from_secs(5);
    let path = client.path().to_owned();
    let streamed = async {
        client.send(&request).await?;
        loop {
            let (attrs, answers) = read_answers(&client.receive().await?)?;
            for a in answers {
                if each.send(a).await.is_err() {
                    return Ok(0);
                }
            }
            if attrs.get("more").map(String::as_str) != Some("true") {
                return Ok(attrs
                    .get("expected")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0));
            }
        }
    };
    tokio::time::timeout(limit, streamed)
        .await
        .map_err(|_| ClientError::Timeout(path, limit))?
}

/// One element found by [`children`]: its attributes (its local name under `""`) and its text.
pub(crate) type Element<'a> = (HashMap<String, String>, &'a str);

/// The top-level elements of `xml`: their attributes and their whole text (start tag included),
/// in order. For an element's children, call it again on the text between its tags, which
/// [`inner`] gives.
pub(crate) fn children(xml: &str) -> Result<Vec<Element<'_>>, String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut attrs = HashMap::new();
    loop {
        let before = r.buffer_position() as usize;
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                if depth == 0 {
                    start = before;
                    attrs = attributes(&e);
                }
                depth += 1;
            }
            Event::Empty(e) if depth == 0 => {
                out.push((attributes(&e), &xml[before..r.buffer_position() as usize]));
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let whole = &xml[start..r.buffer_position() as usize];
                    out.push((std::mem::take(&mut attrs), whole));
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

/// The text between an element's start and end tags.
pub(crate) fn inner(whole: &str) -> &str {
    let open = whole.find('>').map_or(0, |i| i + 1);
    let close = whole.rfind("</").unwrap_or(whole.len());
    whole.get(open..close).unwrap_or("")
}

/// The attributes of an element, and its local name under the key `""`.
fn attributes(e: &quick_xml::events::BytesStart<'_>) -> HashMap<String, String> {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    e.attributes()
        .flatten()
        .map(|a| {
            (
                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                a.unescape_value()
                    .map(|v| v.into_owned())
                    .unwrap_or_default(),
            )
        })
        .chain(std::iter::once((String::new(), name)))
        .collect()
}

/// A request from the operator to an app of the local agent itself.
fn to_local(app: &str, payload: Payload) -> Envelope {
    Envelope::request(
        operator(),
        Target {
            to: Destination::Node("local".into()),
            app: Some(app.into()),
            instance: None,
        },
        payload,
    )
}

fn msglog_envelope(payload: String) -> Result<Envelope, ClientError> {
    let payload = Payload::new(payload).map_err(|e| usage(e.to_string()))?;
    Ok(to_local(crate::router::MSGLOG_APP, payload))
}

fn only_answer(answers: Vec<Envelope>) -> Result<Envelope, ClientError> {
    let answer = answers
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Refused {
            code: "no-answer".into(),
            message: "the agent did not answer".into(),
        })?;
    if answer.kind == Kind::Error {
        let (code, message) = dci_proto::control::error_from_payload(&answer.payload)
            .unwrap_or_else(|| ("error".into(), "refused".into()));
        return Err(ClientError::Refused { code, message });
    }
    Ok(answer)
}

/// Runs `dcish log`.
pub async fn log(client: &mut Client, args: &LogArgs, json: bool) -> Result<String, ClientError> {
    let esc = dci_peerlet::escape;
    let mut q = format!(
        "<query xmlns=\"{}\" limit=\"{}\"",
        crate::router::MSGLOG_NAMESPACE,
        args.limit
    );
    for (name, value) in [
        ("app", &args.app),
        ("sender", &args.sender),
        ("target", &args.target),
    ] {
        if let Some(v) = value {
            q.push_str(&format!(" {name}=\"{}\"", esc(v)));
        }
    }
    for (name, value) in [("since", args.since), ("until", args.until)] {
        if let Some(v) = value {
            q.push_str(&format!(" {name}=\"{v}\""));
        }
    }
    q.push_str("/>");
    let (_, answers) = answers_of(client, &msglog_envelope(q)?).await?;
    let answer = only_answer(answers)?;
    let bad = |m: String| ClientError::Refused {
        code: "bad-answer".into(),
        message: m,
    };
    let records = children(answer.payload.as_str()).map_err(bad)?;
    let Some((_, inner_xml)) = records.into_iter().next() else {
        return Ok(String::new());
    };
    let mut rows = Vec::new();
    for (attrs, record) in children(inner(inner_xml)).map_err(bad)? {
        let xml = inner(record);
        let env = Envelope::from_xml(xml.as_bytes(), &Limits::default())
            .map_err(|e| bad(e.to_string()))?;
        rows.push((attrs, env, xml.to_owned()));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(a, e, xml)| {
                json!({
                    "at_ms": a.get("at").and_then(|v| v.parse::<u64>().ok()),
                    "dir": a.get("dir"),
                    "replay_of": a.get("replay-of"),
                    "id": e.id.to_string(),
                    "kind": e.kind.as_str(),
                    "sender": e.sender.blade.clone().unwrap_or_else(|| e.sender.node.clone()),
                    "sender_app": e.sender.app,
                    "target": e.target.to.to_string(),
                    "target_app": e.target.app,
                    "correlation": e.correlation.map(|c| c.to_string()),
                    "xml": xml,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut text = format!(
        "{:<13} {:<3} {:<36} {:<7} {:<20} {:<24} {}\n",
        "at-ms", "dir", "id", "kind", "from", "to", "app"
    );
    for (a, e, _) in rows {
        text.push_str(&format!(
            "{:<13} {:<3} {:<36} {:<7} {:<20} {:<24} {}{}\n",
            a.get("at").map(String::as_str).unwrap_or(""),
            a.get("dir").map(String::as_str).unwrap_or(""),
            e.id,
            e.kind.as_str(),
            format!(
                "{}/{}",
                e.sender.blade.as_deref().unwrap_or(&e.sender.node),
                e.sender.app
            ),
            e.target.to.to_string(),
            e.target.app.as_deref().unwrap_or("-"),
            a.get("replay-of")
                .map(|o| format!(" (replay of {o})"))
                .unwrap_or_default(),
        ));
    }
    Ok(text.trim_end().to_owned())
}

/// Runs `dcish replay`.
pub async fn replay(
    client: &mut Client,
    args: &ReplayArgs,
    json: bool,
) -> Result<String, ClientError> {
    let ids: Vec<String> = args.ids.iter().map(|i| i.to_string()).collect();
    let mut q = format!(
        "<replay xmlns=\"{}\" id=\"{}\"",
        crate::router::MSGLOG_NAMESPACE,
        ids.join(" ")
    );
    if let Some(to) = &args.to {
        q.push_str(&format!(
            " to=\"{}\"",
            dci_peerlet::escape(&destination(to)?.to_string())
        ));
    }
    q.push_str("/>");
    let (_, answers) = answers_of(client, &msglog_envelope(q)?).await?;
    let answer = only_answer(answers)?;
    let bad = |m: String| ClientError::Refused {
        code: "bad-answer".into(),
        message: m,
    };
    let mut copies = Vec::new();
    if let Some((_, whole)) = children(answer.payload.as_str())
        .map_err(bad)?
        .into_iter()
        .next()
    {
        for (a, copy) in children(inner(whole)).map_err(bad)? {
            let mut answers = Vec::new();
            for (_, xml) in children(inner(copy)).map_err(bad)? {
                answers.push(
                    Envelope::from_xml(xml.as_bytes(), &Limits::default())
                        .map_err(|e| bad(e.to_string()))?,
                );
            }
            let get = |k: &str| a.get(k).cloned().unwrap_or_default();
            copies.push((get("id"), get("of"), get("status"), answers));
        }
    }
    if json {
        let v: Vec<_> = copies
            .iter()
            .map(|(id, of, status, answers)| {
                json!({
                    "id": id,
                    "replay_of": of,
                    "status": status,
                    "answers": answers.iter().map(answer_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut text = String::new();
    for (id, of, status, answers) in &copies {
        text.push_str(&format!("replayed {of} as {id} ({status})\n"));
        for a in answers {
            let who = a
                .sender
                .blade
                .clone()
                .unwrap_or_else(|| a.sender.node.clone());
            text.push_str(&format!(
                "  {who} {} {}: {}\n",
                a.sender.app,
                a.kind,
                a.payload.as_str()
            ));
        }
    }
    Ok(text.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_elements_are_split_with_their_attributes_even_when_nested_alike() {
        let xml = "<a x=\"1\"><a>in</a></a><b y=\"&amp;\"/>";
        let got = children(xml).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0["x"], "1");
        assert_eq!(inner(got[0].1), "<a>in</a>");
        assert_eq!(got[1].0["y"], "&");
    }

    #[test]
    fn a_bare_destination_is_a_blade() {
        assert_eq!(
            destination("blade-2").unwrap(),
            Destination::Blade("blade-2".into())
        );
        assert_eq!(
            destination("group:set:a,b").unwrap(),
            Destination::Group("set:a,b".into())
        );
        assert!(destination("bogus:x").is_err());
    }
}
