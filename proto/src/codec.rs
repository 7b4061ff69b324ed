//! Reading and writing envelopes.
//!
//! The reader walks the header strictly, in schema order (`sender`, `target`, `payload`), refusing
//! any attribute or element the schema does not define and any text outside the payload
//! (comments and processing instructions are allowed, as the schema allows them). The root must
//! be `envelope` with [`NAMESPACE`] as its default namespace and no other namespace declaration.
//! The payload is checked in the same pass and then taken as a slice of the input.

use std::str::FromStr;

use uuid::Uuid;

use crate::error::shown;
use crate::xml::{self, Context, Element, Item, XmlReader};
use crate::{Destination, Envelope, Kind, Limits, Payload, ProtoError, Sender, Target, NAMESPACE};

/// Names of the destination elements, and what `target` misses without one.
const DESTINATION: &str = "target/(node|blade|group|broadcast)";

pub(crate) fn write(env: &Envelope) -> String {
    let mut s = String::with_capacity(320 + env.payload.as_str().len());
    s.push_str("<envelope xmlns=\"");
    s.push_str(NAMESPACE);
    s.push('"');
    attribute(&mut s, "id", &env.id.hyphenated().to_string());
    attribute(&mut s, "kind", env.kind.as_str());
    attribute(&mut s, "ttl", &env.ttl.to_string());
    attribute(&mut s, "created", &env.created_ms.to_string());
    if let Some(c) = env.correlation {
        attribute(&mut s, "correlation", &c.hyphenated().to_string());
    }
    if let Some(e) = env.epoch {
        attribute(&mut s, "epoch", &e.to_string());
    }
    s.push_str("><sender");
    attribute(&mut s, "node", &env.sender.node);
    if let Some(b) = &env.sender.blade {
        attribute(&mut s, "blade", b);
    }
    attribute(&mut s, "app", &env.sender.app);
    if let Some(i) = env.sender.instance {
        attribute(&mut s, "instance", &i.hyphenated().to_string());
    }
    s.push_str("/><target");
    if let Some(a) = &env.target.app {
        attribute(&mut s, "app", a);
    }
    if let Some(i) = env.target.instance {
        attribute(&mut s, "instance", &i.hyphenated().to_string());
    }
    s.push('>');
    let element = env.target.to.element();
    match env.target.to.name() {
        Some(name) => {
            s.push('<');
            s.push_str(element);
            s.push('>');
            xml::escape_text(&mut s, name);
            s.push_str("</");
            s.push_str(element);
            s.push('>');
        }
        None => {
            s.push('<');
            s.push_str(element);
            s.push_str("/>");
        }
    }
    s.push_str("</target><payload>");
    s.push_str(env.payload.as_str());
    s.push_str("</payload></envelope>");
    s
}

fn attribute(s: &mut String, name: &str, value: &str) {
    s.push(' ');
    s.push_str(name);
    s.push_str("=\"");
    xml::escape_attribute(s, value);
    s.push('"');
}

pub(crate) fn read(bytes: &[u8], limits: &Limits) -> Result<Envelope, ProtoError> {
    if bytes.len() > limits.max_envelope_bytes {
        return Err(ProtoError::TooLarge {
            what: "envelope",
            len: bytes.len(),
            max: limits.max_envelope_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ProtoError::malformed(format!(
            "the envelope is not UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    xml::check_chars(text)?;
    let mut r = XmlReader::document(text);

    let root = match structural(&mut r)? {
        Item::Start(e) => e,
        Item::Empty(e) => {
            check_root(&e)?;
            return Err(ProtoError::MissingField("sender"));
        }
        Item::Eof => return Err(ProtoError::malformed("no root element")),
        Item::End | Item::Text { .. } | Item::CData(_) | Item::Misc => {
            return Err(ProtoError::malformed("text before the root element"))
        }
    };
    check_root(&root)?;
    let [_, id, kind, ttl, created, correlation, epoch] = attributes(
        &root,
        "envelope",
        [
            "xmlns",
            "id",
            "kind",
            "ttl",
            "created",
            "correlation",
            "epoch",
        ],
    )?;
    let id = uuid("id", required("id", id)?)?;
    let kind = Kind::from_str(required("kind", kind)?)?;
    let ttl = number::<u8>("ttl", required("ttl", ttl)?)?;
    let created_ms = number::<u64>("created", required("created", created)?)?;
    let correlation = correlation.map(|v| uuid("correlation", v)).transpose()?;
    let epoch = epoch.map(|v| number::<u64>("epoch", v)).transpose()?;

    let (sender_el, open) = child(&mut r, "sender", &["target", "payload"])?;
    let [node, blade, app, instance] =
        attributes(&sender_el, "sender", ["node", "blade", "app", "instance"])?;
    let sender = Sender {
        node: name("sender/@node", required("sender/@node", node)?)?,
        blade: blade.map(|b| name("sender/@blade", b)).transpose()?,
        app: name("sender/@app", required("sender/@app", app)?)?,
        instance: instance.map(|v| uuid("sender/@instance", v)).transpose()?,
    };
    if open {
        empty_content(&mut r, "sender")?;
    }

    let (target_el, open) = child(&mut r, "target", &["payload"])?;
    let [app, instance] = attributes(&target_el, "target", ["app", "instance"])?;
    let app = app.map(|a| name("target/@app", a)).transpose()?;
    let instance = instance.map(|v| uuid("target/@instance", v)).transpose()?;
    if !open {
        return Err(ProtoError::MissingField(DESTINATION));
    }
    let to = destination(&mut r)?;
    match structural(&mut r)? {
        Item::End => {}
        Item::Start(_) | Item::Empty(_) => {
            return Err(ProtoError::invalid("target", "more than one destination"))
        }
        Item::Text { .. } | Item::CData(_) | Item::Misc | Item::Eof => return Err(header_text()),
    }
    let target = Target { to, app, instance };

    let (payload_el, open) = child(&mut r, "payload", &[])?;
    let [] = attributes(&payload_el, "payload", [])?;
    let payload = if open {
        let start = r.position();
        let end = walk_payload(&mut r, start, limits)?;
        let raw = text
            .get(start..end)
            .filter(|_| text.get(..start).is_some_and(|head| head.ends_with('>')))
            .filter(|_| text.get(end..).is_some_and(|tail| tail.starts_with("</")))
            .ok_or_else(|| ProtoError::malformed("the payload could not be delimited"))?;
        Payload::trusted(raw.to_owned())
    } else {
        Payload::empty()
    };

    match structural(&mut r)? {
        Item::End => {}
        Item::Start(e) | Item::Empty(e) => {
            return Err(ProtoError::invalid(
                "envelope",
                format!(
                    "unknown element <{}> after <payload> (the header is strict)",
                    e.qname
                ),
            ))
        }
        Item::Text { .. } | Item::CData(_) | Item::Misc | Item::Eof => return Err(header_text()),
    }
    match structural(&mut r)? {
        Item::Eof => {}
        Item::Start(_)
        | Item::Empty(_)
        | Item::End
        | Item::Text { .. }
        | Item::CData(_)
        | Item::Misc => return Err(ProtoError::malformed("content after </envelope>")),
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

/// Checks a payload on its own, as it would sit inside an envelope.
pub(crate) fn check_payload(xml: &str, limits: &Limits) -> Result<(), ProtoError> {
    if xml.len() > limits.max_payload_bytes {
        return Err(ProtoError::TooLarge {
            what: "payload",
            len: xml.len(),
            max: limits.max_payload_bytes,
        });
    }
    xml::check_chars(xml)?;
    let mut r = XmlReader::fragment(xml, NAMESPACE);
    walk_payload(&mut r, 0, limits).map(|_| ())
}

/// Walks payload content from the reader's position to the end tag that closes the payload (or
/// the end of input for a standalone payload) and returns the offset where the content ends.
/// Checks depth, size, and that every top-level element has a namespace of its own.
fn walk_payload(r: &mut XmlReader<'_>, start: usize, limits: &Limits) -> Result<usize, ProtoError> {
    let base = r.depth();
    loop {
        let before = r.position();
        let item = r.next()?;
        let depth = r.depth().saturating_sub(base);
        let element = match &item {
            Item::Start(e) => Some((e, depth)),
            Item::Empty(e) => Some((e, depth + 1)),
            Item::End if r.depth() < base => return Ok(before),
            Item::Eof => return Ok(before),
            Item::End | Item::Text { .. } | Item::CData(_) | Item::Misc => None,
        };
        if let Some((e, depth)) = element {
            if depth > limits.max_depth {
                return Err(ProtoError::TooDeep(limits.max_depth));
            }
            let own_namespace = e.namespace.as_deref().is_some_and(|ns| ns != NAMESPACE);
            if depth == 1 && !own_namespace {
                return Err(ProtoError::invalid(
                    "payload",
                    format!(
                        "top-level element <{}> must declare a namespace of its own (not the envelope's)",
                        e.qname
                    ),
                ));
            }
        }
        let len = r.position().saturating_sub(start);
        if len > limits.max_payload_bytes {
            return Err(ProtoError::TooLarge {
                what: "payload",
                len,
                max: limits.max_payload_bytes,
            });
        }
    }
}

/// The next item that matters in the header: comments, processing instructions and whitespace
/// are skipped; other text is returned for the caller to refuse.
fn structural<'a>(r: &mut XmlReader<'a>) -> Result<Item<'a>, ProtoError> {
    loop {
        match r.next()? {
            Item::Misc => {}
            Item::Text { raw, .. } if raw.bytes().all(xml::is_space) => {}
            item => return Ok(item),
        }
    }
}

fn header_text() -> ProtoError {
    ProtoError::malformed("text is not allowed in the envelope header")
}

fn check_root(e: &Element<'_>) -> Result<(), ProtoError> {
    if e.local != "envelope" {
        return Err(ProtoError::invalid(
            "root",
            format!("expected <envelope>, found <{}>", e.qname),
        ));
    }
    if e.qname != "envelope" || e.namespace.as_deref() != Some(NAMESPACE) {
        return Err(ProtoError::Namespace);
    }
    Ok(())
}

/// The next child of `<envelope>`, which must be `{NAMESPACE}name`; the flag says whether it has
/// content to read (a start tag rather than an empty-element tag). Finding one of the elements
/// that come `later` in the sequence means this one is missing.
fn child<'a>(
    r: &mut XmlReader<'a>,
    name: &'static str,
    later: &[&str],
) -> Result<(Element<'a>, bool), ProtoError> {
    let (e, open) = match structural(r)? {
        Item::Start(e) => (e, true),
        Item::Empty(e) => (e, false),
        Item::End => return Err(ProtoError::MissingField(name)),
        Item::Text { .. } | Item::CData(_) | Item::Misc | Item::Eof => return Err(header_text()),
    };
    if e.qname == name && e.is(NAMESPACE, name) {
        return Ok((e, open));
    }
    if later.contains(&e.qname) {
        return Err(ProtoError::MissingField(name));
    }
    Err(ProtoError::invalid(
        "envelope",
        format!(
            "expected <{name}>, found <{}> (the header is strict)",
            e.qname
        ),
    ))
}

/// Reads up to the end tag of an element the schema declares empty: only comments and
/// processing instructions may come before it.
fn empty_content(r: &mut XmlReader<'_>, element: &'static str) -> Result<(), ProtoError> {
    loop {
        match r.next()? {
            Item::Misc => {}
            Item::End => return Ok(()),
            Item::Start(_) | Item::Empty(_) | Item::Text { .. } | Item::CData(_) | Item::Eof => {
                return Err(ProtoError::invalid(element, "must be empty"))
            }
        }
    }
}

/// Makes a named destination.
type Named = fn(String) -> Destination;

/// Reads the destination element inside `<target>`.
fn destination(r: &mut XmlReader<'_>) -> Result<Destination, ProtoError> {
    let (e, open) = match structural(r)? {
        Item::Start(e) => (e, true),
        Item::Empty(e) => (e, false),
        Item::End => return Err(ProtoError::MissingField(DESTINATION)),
        Item::Text { .. } | Item::CData(_) | Item::Misc | Item::Eof => return Err(header_text()),
    };
    let (field, named): (&str, Option<Named>) = match e.qname {
        "node" => ("target/node", Some(Destination::Node)),
        "blade" => ("target/blade", Some(Destination::Blade)),
        "group" => ("target/group", Some(Destination::Group)),
        "broadcast" => ("target/broadcast", None),
        other => {
            return Err(ProtoError::invalid(
                "target",
                format!("unknown destination <{other}> (the header is strict)"),
            ))
        }
    };
    let [] = attributes(&e, field, [])?;
    let Some(named) = named else {
        if open {
            empty_content(r, field)?;
        }
        return Ok(Destination::Broadcast);
    };
    let mut value = String::new();
    if open {
        loop {
            match r.next()? {
                Item::Text { value: v, .. } => value.push_str(&v),
                Item::CData(raw) => value.push_str(&xml::decode(raw, Context::CData)?),
                Item::Misc => {}
                Item::End => break,
                Item::Start(_) | Item::Empty(_) | Item::Eof => {
                    return Err(ProtoError::invalid(field, "may hold only text"))
                }
            }
        }
    }
    Ok(named(name(field, &value)?))
}

/// The values of `allowed` attributes, in that order; any other attribute is refused.
fn attributes<'e, const N: usize>(
    e: &'e Element<'_>,
    element: &str,
    allowed: [&str; N],
) -> Result<[Option<&'e str>; N], ProtoError> {
    let mut values = [None; N];
    for a in &e.attributes {
        match allowed.iter().position(|&name| name == a.name) {
            Some(i) => values[i] = Some(&*a.value),
            None => {
                return Err(ProtoError::invalid(
                    format!("{element}/@{}", a.name),
                    "unknown attribute (the header is strict)",
                ))
            }
        }
    }
    Ok(values)
}

fn required<'v>(field: &'static str, value: Option<&'v str>) -> Result<&'v str, ProtoError> {
    value.ok_or(ProtoError::MissingField(field))
}

fn name(field: &str, value: &str) -> Result<String, ProtoError> {
    if value.is_empty() {
        return Err(ProtoError::invalid(field, "empty"));
    }
    Ok(value.to_owned())
}

/// A UUID in the hyphenated form the schema allows (any case).
fn uuid(field: &str, value: &str) -> Result<Uuid, ProtoError> {
    let hyphens = [8, 13, 18, 23];
    let shaped = value.len() == 36
        && value
            .bytes()
            .enumerate()
            .all(|(i, b)| (b == b'-') == hyphens.contains(&i));
    shaped
        .then(|| Uuid::try_parse(value).ok())
        .flatten()
        .ok_or_else(|| ProtoError::invalid(field, format!("{} is not a UUID", shown(value))))
}

/// An unsigned decimal number: digits only, as the schema's unsigned types are written.
fn number<T: FromStr>(field: &str, value: &str) -> Result<T, ProtoError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtoError::invalid(
            field,
            format!("{} is not an unsigned decimal number", shown(value)),
        ));
    }
    value.parse().map_err(|_| {
        ProtoError::invalid(
            field,
            format!(
                "{} is out of range (at most {} bits)",
                shown(value),
                std::mem::size_of::<T>() * 8
            ),
        )
    })
}
