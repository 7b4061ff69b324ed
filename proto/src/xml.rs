//! The envelope parser: a strict walk over quick-xml events that copies the payload's bytes verbatim.

use std::borrow::Cow;
use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use uuid::Uuid;

use crate::{Destination, Envelope, Kind, Limits, Payload, ProtoError, Sender, Target, NAMESPACE};

/// The attributes of one element, unescaped, refusing duplicates and names outside `allowed`.
fn attributes<'a>(
    e: &'a BytesStart<'a>,
    element: &str,
    allowed: &[&str],
) -> Result<HashMap<String, Cow<'a, str>>, ProtoError> {
    let mut out = HashMap::new();
    for a in e.attributes().with_checks(true) {
        let a = a?;
        let key = std::str::from_utf8(a.key.as_ref())
            .map_err(|_| ProtoError::Malformed("attribute name is not UTF-8".into()))?
            .to_string();
        if !allowed.contains(&key.as_str()) {
            return Err(ProtoError::invalid(
                format!("{element}/@{key}"),
                "unknown attribute",
            ));
        }
        let value = a.unescape_value()?;
        out.insert(key, value);
    }
    Ok(out)
}

fn required(
    attrs: &mut HashMap<String, Cow<'_, str>>,
    name: &'static str,
) -> Result<String, ProtoError> {
    attrs
        .remove(name)
        .map(Cow::into_owned)
        .ok_or(ProtoError::MissingField(name))
}

fn uuid(field: &str, value: &str) -> Result<Uuid, ProtoError> {
    Uuid::parse_str(value).map_err(|e| ProtoError::invalid(field, e.to_string()))
}

fn number<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, ProtoError> {
    value
        .parse()
        .map_err(|_| ProtoError::invalid(field, format!("'{value}' is not a number in range")))
}

struct Walker<'a> {
    reader: Reader<&'a [u8]>,
}

impl<'a> Walker<'a> {
    /// The next structural event: comments, processing instructions and whitespace are skipped,
    /// a DTD is refused, and other text in the header is an error.
    fn next(&mut self) -> Result<Event<'a>, ProtoError> {
        loop {
            match self.reader.read_event()? {
                Event::DocType(_) => return Err(ProtoError::Dtd),
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
                Event::Text(_) | Event::CData(_) => {
                    return Err(ProtoError::Malformed(
                        "text is not allowed in the envelope header".into(),
                    ))
                }
                other => return Ok(other),
            }
        }
    }

    fn expect_end(&mut self, name: &str) -> Result<(), ProtoError> {
        match self.next()? {
            Event::End(e) if e.name().as_ref() == name.as_bytes() => Ok(()),
            _ => Err(ProtoError::Malformed(format!("expected </{name}>"))),
        }
    }

    /// The text content of a leaf element whose start tag was just read.
    fn text_until_end(&mut self, name: &'static str) -> Result<String, ProtoError> {
        let mut value = String::new();
        loop {
            match self.reader.read_event()? {
                Event::Text(t) => value.push_str(&t.unescape()?),
                Event::CData(c) => value.push_str(
                    std::str::from_utf8(&c)
                        .map_err(|_| ProtoError::Malformed("CDATA is not UTF-8".into()))?,
                ),
                Event::Comment(_) => {}
                Event::End(e) if e.name().as_ref() == name.as_bytes() => break,
                Event::DocType(_) => return Err(ProtoError::Dtd),
                _ => {
                    return Err(ProtoError::Malformed(format!(
                        "<{name}> may hold only text"
                    )))
                }
            }
        }
        if value.is_empty() {
            return Err(ProtoError::invalid(format!("target/{name}"), "empty"));
        }
        Ok(value)
    }
}

pub(crate) fn parse_envelope(bytes: &[u8], limits: &Limits) -> Result<Envelope, ProtoError> {
    if bytes.len() > limits.max_envelope_bytes {
        return Err(ProtoError::TooLarge {
            what: "envelope",
            len: bytes.len(),
            max: limits.max_envelope_bytes,
        });
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ProtoError::Malformed("the envelope is not UTF-8".into()))?;
    let mut w = Walker {
        reader: Reader::from_str(text),
    };

    // <envelope ...>
    let root = match w.next()? {
        Event::Start(e) => e,
        Event::Empty(_) => return Err(ProtoError::MissingField("sender")),
        Event::Eof => return Err(ProtoError::Malformed("empty document".into())),
        _ => return Err(ProtoError::Malformed("expected <envelope>".into())),
    };
    if root.name().as_ref() != b"envelope" {
        return Err(ProtoError::Namespace);
    }
    let mut a = attributes(
        &root,
        "envelope",
        &[
            "xmlns",
            "id",
            "kind",
            "ttl",
            "created",
            "correlation",
            "epoch",
        ],
    )?;
    if a.remove("xmlns").as_deref() != Some(NAMESPACE) {
        return Err(ProtoError::Namespace);
    }
    let id = uuid("id", &required(&mut a, "id")?)?;
    let kind: Kind = required(&mut a, "kind")?.parse()?;
    let ttl: u8 = number("ttl", &required(&mut a, "ttl")?)?;
    let created_ms: u64 = number("created", &required(&mut a, "created")?)?;
    let correlation = a
        .remove("correlation")
        .map(|v| uuid("correlation", &v))
        .transpose()?;
    let epoch = a
        .remove("epoch")
        .map(|v| number::<u64>("epoch", &v))
        .transpose()?;

    // <sender .../>
    let (sender_el, sender_open) = match w.next()? {
        Event::Empty(e) if e.name().as_ref() == b"sender" => (e, false),
        Event::Start(e) if e.name().as_ref() == b"sender" => (e, true),
        _ => return Err(ProtoError::MissingField("sender")),
    };
    let mut s = attributes(&sender_el, "sender", &["node", "blade", "app", "instance"])?;
    let sender = Sender {
        node: required(&mut s, "node")?,
        app: required(&mut s, "app")?,
        blade: s.remove("blade").map(Cow::into_owned),
        instance: s
            .remove("instance")
            .map(|v| uuid("sender/@instance", &v))
            .transpose()?,
    };
    if sender_open {
        w.expect_end("sender")?;
    }

    // <target ...><node|blade|group>NAME</...> or <broadcast/></target>
    let target_el = match w.next()? {
        Event::Start(e) if e.name().as_ref() == b"target" => e,
        Event::Empty(e) if e.name().as_ref() == b"target" => {
            return Err(ProtoError::MissingField("target destination"))
        }
        _ => return Err(ProtoError::MissingField("target")),
    };
    let mut t = attributes(&target_el, "target", &["app", "instance"])?;
    let app = t.remove("app").map(Cow::into_owned);
    let instance = t
        .remove("instance")
        .map(|v| uuid("target/@instance", &v))
        .transpose()?;
    let to = match w.next()? {
        Event::Empty(e) if e.name().as_ref() == b"broadcast" => {
            attributes(&e, "broadcast", &[])?;
            Destination::Broadcast
        }
        Event::Start(e) => {
            attributes(&e, "target destination", &[])?;
            match e.name().as_ref() {
                b"broadcast" => {
                    w.expect_end("broadcast")?;
                    Destination::Broadcast
                }
                b"node" => Destination::Node(w.text_until_end("node")?),
                b"blade" => Destination::Blade(w.text_until_end("blade")?),
                b"group" => Destination::Group(w.text_until_end("group")?),
                other => {
                    return Err(ProtoError::invalid(
                        "target",
                        format!("unknown destination <{}>", String::from_utf8_lossy(other)),
                    ))
                }
            }
        }
        _ => return Err(ProtoError::MissingField("target destination")),
    };
    w.expect_end("target")?;
    let target = Target { to, app, instance };

    // <payload>...</payload>, copied verbatim.
    let payload = match w.next()? {
        Event::Empty(e) if e.name().as_ref() == b"payload" => {
            attributes(&e, "payload", &[])?;
            Payload::empty()
        }
        Event::Start(e) if e.name().as_ref() == b"payload" => {
            attributes(&e, "payload", &[])?;
            let start = w.reader.buffer_position() as usize;
            let mut depth = 0usize;
            let end = loop {
                let before = w.reader.buffer_position() as usize;
                match w.reader.read_event()? {
                    Event::DocType(_) => return Err(ProtoError::Dtd),
                    Event::Start(_) => {
                        depth += 1;
                        if depth > limits.max_depth {
                            return Err(ProtoError::TooDeep(limits.max_depth));
                        }
                    }
                    Event::End(_) if depth == 0 => break before,
                    Event::End(_) => depth -= 1,
                    Event::Eof => return Err(ProtoError::Malformed("unclosed <payload>".into())),
                    Event::Empty(_)
                    | Event::Text(_)
                    | Event::CData(_)
                    | Event::Comment(_)
                    | Event::PI(_)
                    | Event::Decl(_) => {}
                }
            };
            let raw = &text[start..end];
            if raw.len() > limits.max_payload_bytes {
                return Err(ProtoError::TooLarge {
                    what: "payload",
                    len: raw.len(),
                    max: limits.max_payload_bytes,
                });
            }
            check_fragment(raw, limits)?;
            Payload::trusted(raw.to_string())
        }
        _ => return Err(ProtoError::MissingField("payload")),
    };
    w.expect_end("envelope")?;
    match w.next()? {
        Event::Eof => {}
        _ => return Err(ProtoError::Malformed("content after </envelope>".into())),
    }
    Ok(Envelope {
        id,
        kind,
        ttl,
        created_ms,
        sender,
        target,
        correlation,
        epoch,
        payload,
    })
}

/// Checks a payload fragment: well-formed, balanced, no DTD, not too deep, and every top-level
/// element declares its own namespace (other than the envelope's).
pub(crate) fn check_fragment(xml: &str, limits: &Limits) -> Result<(), ProtoError> {
    if xml.len() > limits.max_payload_bytes {
        return Err(ProtoError::TooLarge {
            what: "payload",
            len: xml.len(),
            max: limits.max_payload_bytes,
        });
    }
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    loop {
        match reader.read_event()? {
            Event::DocType(_) => return Err(ProtoError::Dtd),
            Event::Decl(_) => {
                return Err(ProtoError::Malformed(
                    "an XML declaration is not allowed inside a payload".into(),
                ))
            }
            Event::Start(e) => {
                if depth == 0 {
                    check_namespaced(&e)?;
                } else {
                    check_attributes(&e)?;
                }
                depth += 1;
                if depth > limits.max_depth {
                    return Err(ProtoError::TooDeep(limits.max_depth));
                }
            }
            Event::Empty(e) => {
                if depth == 0 {
                    check_namespaced(&e)?;
                } else {
                    check_attributes(&e)?;
                }
            }
            Event::End(_) => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| ProtoError::Malformed("unmatched end tag in payload".into()))?;
            }
            Event::Text(t) => {
                t.unescape()?;
            }
            Event::CData(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Err(ProtoError::Malformed("unclosed element in payload".into()));
    }
    Ok(())
}

fn check_attributes(e: &BytesStart<'_>) -> Result<(), ProtoError> {
    for a in e.attributes().with_checks(true) {
        a?.unescape_value()?;
    }
    Ok(())
}

fn check_namespaced(e: &BytesStart<'_>) -> Result<(), ProtoError> {
    let name = e.name();
    let wanted: Vec<u8> = match name.prefix() {
        Some(p) => [b"xmlns:".as_slice(), p.as_ref()].concat(),
        None => b"xmlns".to_vec(),
    };
    for a in e.attributes().with_checks(true) {
        let a = a?;
        let value = a.unescape_value()?;
        if a.key.as_ref() == wanted.as_slice() {
            if value.is_empty() || value == NAMESPACE {
                break;
            }
            return check_attributes(e);
        }
    }
    Err(ProtoError::invalid(
        "payload",
        format!(
            "top-level element <{}> must declare its own namespace (not the envelope's)",
            String::from_utf8_lossy(name.as_ref())
        ),
    ))
}
