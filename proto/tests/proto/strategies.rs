//! Generators of names, payloads, envelopes and mutations.

use dci_proto::{Destination, Envelope, Kind, Payload, Sender, Target};
use proptest::prelude::*;

/// Any character XML can carry, biased towards the ones that need escaping.
fn xml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        2 => prop::sample::select(&['<', '>', '&', '"', '\'', '\t', '\n', '\r', ']', ';', '#'][..]),
        1 => proptest::char::range('\u{A0}', '\u{D7FF}'),
        1 => proptest::char::range('\u{E000}', '\u{FFFD}'),
        1 => proptest::char::range('\u{10000}', '\u{10FFFF}'),
    ]
}

fn xml_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(xml_char(), len).prop_map(|cs| cs.into_iter().collect())
}

/// A node, blade, group or application name: non-empty, any characters XML can carry.
pub fn name() -> impl Strategy<Value = String> {
    xml_string(1..16)
}

/// Escapes character data the way any writer may (independently of the crate).
fn text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\r', "&#13;")
}

fn attribute(s: &str) -> String {
    text(s)
        .replace('"', "&quot;")
        .replace('\t', "&#9;")
        .replace('\n', "&#10;")
}

/// A piece of payload content below a top-level element.
#[derive(Debug, Clone)]
enum Content {
    Text(String),
    Reference(&'static str),
    CData(String),
    Comment(String),
    Pi(&'static str, String),
    Element {
        name: &'static str,
        attributes: Vec<(&'static str, String)>,
        children: Vec<Content>,
    },
}

fn content() -> impl Strategy<Value = Content> {
    let leaf = prop_oneof![
        xml_string(0..12).prop_map(Content::Text),
        prop::sample::select(&["&amp;", "&lt;", "&#233;", "&#x1F600;", "&quot;"][..])
            .prop_map(Content::Reference),
        xml_string(0..12).prop_map(|s| Content::CData(s.replace("]]>", "]]"))),
        xml_string(0..12).prop_map(|s| Content::Comment(s.replace('-', "~"))),
        (
            prop::sample::select(&["pi", "render", "x-y"][..]),
            xml_string(0..8)
        )
            .prop_map(|(t, d)| Content::Pi(t, d.replace("?>", "? >"))),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            prop::sample::select(&["a", "item", "x-y", "n.1", "\u{e9}l\u{e9}ment"][..]),
            prop::collection::btree_map(
                prop::sample::select(&["k", "v", "data-x", "xml:lang"][..]),
                xml_string(0..8),
                0..3,
            ),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(name, attributes, children)| Content::Element {
                name,
                attributes: attributes.into_iter().collect(),
                children,
            })
    })
}

fn render(c: &Content, prefix: &str, out: &mut String) {
    match c {
        Content::Text(s) => out.push_str(&text(s)),
        Content::Reference(r) => out.push_str(r),
        Content::CData(s) => out.push_str(&format!("<![CDATA[{s}]]>")),
        Content::Comment(s) => out.push_str(&format!("<!--{s}-->")),
        Content::Pi(t, d) => out.push_str(&format!("<?{t} {d}?>")),
        Content::Element {
            name,
            attributes,
            children,
        } => {
            out.push_str(&format!("<{prefix}{name}"));
            for (k, v) in attributes {
                out.push_str(&format!(" {k}=\"{}\"", attribute(v)));
            }
            if children.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for child in children {
                render(child, prefix, out);
            }
            out.push_str(&format!("</{prefix}{name}>"));
        }
    }
}

/// Well-formed payloads: text, comments and namespaced top-level elements (default namespace or
/// a prefix) holding nested elements, attributes, references, CDATA, comments and PIs.
pub fn payload() -> impl Strategy<Value = Payload> {
    let top = (
        any::<bool>(),
        0u8..3,
        prop::collection::vec(content(), 0..4),
    );
    let item = prop_oneof![
        3 => top.prop_map(|(prefixed, ns, children)| (Some((prefixed, ns)), children)),
        1 => content().prop_map(|c| match c {
            Content::Element { .. } => (None, Vec::new()),
            leaf => (None, vec![leaf]),
        }),
    ];
    prop::collection::vec(item, 0..4).prop_map(|items| {
        let mut xml = String::new();
        for (element, children) in items {
            match element {
                Some((prefixed, ns)) => {
                    let (prefix, declaration) = if prefixed {
                        ("p:", format!("xmlns:p=\"urn:dci:test:{ns}\""))
                    } else {
                        ("", format!("xmlns=\"urn:dci:test:{ns}\""))
                    };
                    xml.push_str(&format!("<{prefix}top {declaration}>"));
                    for child in &children {
                        render(child, prefix, &mut xml);
                    }
                    xml.push_str(&format!("</{prefix}top>"));
                }
                None => {
                    for child in &children {
                        render(child, "", &mut xml);
                    }
                }
            }
        }
        Payload::new(xml.as_str()).unwrap_or_else(|e| panic!("generated payload {xml:?}: {e}"))
    })
}

fn uuid() -> impl Strategy<Value = uuid::Uuid> {
    any::<u128>().prop_map(uuid::Uuid::from_u128)
}

/// Any envelope that passes `Envelope::check`.
pub fn envelope() -> impl Strategy<Value = Envelope> {
    let kind = prop::sample::select(&[Kind::Request, Kind::Reply, Kind::Event, Kind::Error][..]);
    let destination = prop_oneof![
        name().prop_map(Destination::Node),
        name().prop_map(Destination::Blade),
        name().prop_map(Destination::Group),
        Just(Destination::Broadcast),
    ];
    let sender = (
        name(),
        prop::option::of(name()),
        name(),
        prop::option::of(uuid()),
    )
        .prop_map(|(node, blade, app, instance)| Sender {
            node,
            blade,
            app,
            instance,
        });
    let target = (
        destination,
        prop::option::of(name()),
        prop::option::of(uuid()),
    )
        .prop_map(|(to, app, instance)| Target { to, app, instance });
    (
        (uuid(), kind, any::<u8>(), any::<u64>()),
        sender,
        target,
        (
            prop::option::of(uuid()),
            prop::option::of(any::<u64>()),
            payload(),
        ),
    )
        .prop_map(
            |((id, kind, ttl, created_ms), sender, target, (correlation, epoch, payload))| {
                Envelope {
                    id,
                    kind,
                    ttl,
                    created_ms,
                    sender,
                    target,
                    correlation,
                    epoch,
                    payload,
                }
            },
        )
}

/// Tokens worth inserting into an envelope: markup, references, declarations, odd characters.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "&",
    ";",
    "\"",
    "'",
    "/",
    "=",
    "!",
    "?",
    "-",
    "[",
    "]",
    ":",
    " ",
    "\n",
    "\r",
    "\t",
    "\u{0}",
    "#",
    "x",
    "a",
    "\u{e9}",
    "]]>",
    "<!--",
    "-->",
    "<![CDATA[",
    "<?",
    "?>",
    "<!DOCTYPE x>",
    "<!ENTITY e 'x'>",
    "&amp;",
    "&#0;",
    "&#x41;",
    "&e;",
    "xmlns=\"urn:x\"",
    " xmlns:p=\"urn:p\"",
    "p:",
    "</payload>",
    "<payload>",
    "<x xmlns=\"urn:x\">",
    "</x>",
    "<x/>",
    "\u{FEFF}",
    "\u{FFFE}",
    " ttl=\"3\"",
    "<node>n</node>",
    "<broadcast/>",
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Overwrite one byte.
    Replace(usize, u8),
    /// Insert a token.
    Insert(usize, &'static str),
    /// Delete a short range.
    Delete(usize, usize),
    /// Copy a short range to another place.
    Duplicate(usize, usize, usize),
}

/// One to six edits at arbitrary positions (taken modulo the length).
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
        3 => (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        1 => (any::<usize>(), 1usize..12).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<usize>(), 1usize..24, any::<usize>()).prop_map(|(from, n, to)| Edit::Duplicate(from, n, to)),
    ];
    prop::collection::vec(edit, 1..7)
}

/// Applies `edits` to `bytes`.
pub fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for edit in edits {
        let len = out.len().max(1);
        match *edit {
            Edit::Replace(at, b) => {
                if let Some(slot) = out.get_mut(at % len) {
                    *slot = b;
                }
            }
            Edit::Insert(at, token) => {
                let at = (at % (out.len() + 1)).min(out.len());
                out.splice(at..at, token.bytes());
            }
            Edit::Delete(at, n) => {
                let at = (at % len).min(out.len());
                let end = (at + n).min(out.len());
                out.drain(at..end);
            }
            Edit::Duplicate(from, n, to) => {
                let from = (from % len).min(out.len());
                let end = (from + n).min(out.len());
                let piece = out[from..end].to_vec();
                let to = (to % (out.len() + 1)).min(out.len());
                out.splice(to..to, piece);
            }
        }
    }
    out
}
