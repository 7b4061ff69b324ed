//! The XML layer under the codec: quick-xml cuts the input into events, and this module checks
//! what quick-xml leaves to its caller, so that everything the codec accepts is well-formed,
//! namespace-well-formed XML 1.0 that any conforming parser reads the same way:
//!
//! - every character is one XML allows, and entity references are the five predefined ones or
//!   character references to allowed characters; values are decoded with the line-end and
//!   attribute-value normalization a conforming parser applies;
//! - element, attribute and processing-instruction names are proper names; attributes are
//!   separated by whitespace, quoted, free of `<`, and unique, also after namespace expansion;
//! - every prefix is declared, and the reserved `xml`/`xmlns` prefixes and namespaces are
//!   respected;
//! - comments hold no `--`, text holds no `]]>`, and an XML declaration may only open a document;
//! - a `<!DOCTYPE` or a markup declaration anywhere is [`ProtoError::Dtd`].
//!
//! Nothing here allocates per byte of input: values are borrowed from the input unless decoding
//! changes them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::shown;
use crate::ProtoError;

/// The namespace the `xml` prefix is bound to.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of namespace declarations; nothing may be bound to it.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Markup declarations that only exist inside a DTD; quick-xml reports them as syntax errors.
const DECLARATIONS: [&str; 4] = ["<!ENTITY", "<!ELEMENT", "<!ATTLIST", "<!NOTATION"];

/// Whether `c` may appear in an XML 1.0 document (the `Char` production).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// Whether `b` is XML whitespace (the `S` production).
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Refuses any character XML does not allow: C0 controls other than tab, line feed and carriage
/// return, and U+FFFE/U+FFFF (UTF-8 already rules out surrogates).
pub(crate) fn check_chars(s: &str) -> Result<(), ProtoError> {
    let b = s.as_bytes();
    let suspect = |x: &u8| *x < 0x20 || *x == 0xEF;
    let mut from = 0;
    while let Some(i) = b.get(from..).and_then(|rest| rest.iter().position(suspect)) {
        let i = from + i;
        let bad = match b[i] {
            0xEF => b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)),
            x => !matches!(x, b'\t' | b'\n' | b'\r'),
        };
        if bad {
            let c = s
                .get(i..)
                .and_then(|r| r.chars().next())
                .map_or(0, u32::from);
            return Err(ProtoError::malformed(format!(
                "character U+{c:04X} at byte {i} is not allowed in XML"
            )));
        }
        from = i + 1;
    }
    Ok(())
}

/// `NameStartChar` without the colon (names are namespace-aware, so colons only split QNames).
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// `NameChar` without the colon.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Whether `s` is an `NCName` (a name without a colon).
pub(crate) fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// Splits a `QName` into its prefix and local part; `None` if `s` is not one.
fn split_qname(s: &str) -> Option<(Option<&str>, &str)> {
    match s.split_once(':') {
        Some((prefix, local)) if is_ncname(prefix) && is_ncname(local) => {
            Some((Some(prefix), local))
        }
        Some(_) => None,
        None if is_ncname(s) => Some((None, s)),
        None => None,
    }
}

/// Where a run of characters sits, which decides how it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// Character data: references are expanded and line ends normalized to `\n`.
    Text,
    /// An attribute value: as text, and then tab, line feed and carriage return become spaces.
    Attribute,
    /// A CDATA section: only line ends are normalized.
    CData,
}

/// Decodes `raw` as a conforming XML processor would; borrowed when nothing changes.
pub(crate) fn decode(raw: &str, context: Context) -> Result<Cow<'_, str>, ProtoError> {
    let special = |b: &u8| match context {
        Context::Text => matches!(b, b'&' | b'\r'),
        Context::Attribute => matches!(b, b'&' | b'\r' | b'\n' | b'\t' | b'<'),
        Context::CData => *b == b'\r',
    };
    if !raw.as_bytes().iter().any(special) {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let space = if context == Context::Attribute {
        ' '
    } else {
        '\n'
    };
    let mut out = String::with_capacity(raw.len());
    let (mut run, mut i) = (0, 0);
    // Every byte acted on is ASCII, so every slice boundary is a character boundary.
    while let Some(&b) = bytes.get(i) {
        match b {
            b'&' if context != Context::CData => {
                out.push_str(&raw[run..i]);
                let end = raw[i..]
                    .find(';')
                    .map(|j| i + j)
                    .ok_or_else(|| ProtoError::malformed("an '&' that starts no reference"))?;
                out.push(reference(&raw[i + 1..end])?);
                i = end + 1;
                run = i;
            }
            b'\r' => {
                out.push_str(&raw[run..i]);
                out.push(space);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                run = i;
            }
            b'\n' | b'\t' if context == Context::Attribute => {
                out.push_str(&raw[run..i]);
                out.push(' ');
                i += 1;
                run = i;
            }
            b'<' if context == Context::Attribute => {
                return Err(ProtoError::malformed("'<' in an attribute value"))
            }
            _ => i += 1,
        }
    }
    out.push_str(&raw[run..]);
    Ok(Cow::Owned(out))
}

/// The character an entity or character reference (without `&` and `;`) stands for. Only the
/// five predefined entities exist: there is no DTD to declare others.
fn reference(name: &str) -> Result<char, ProtoError> {
    let code = match name {
        "amp" => return Ok('&'),
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "quot" => return Ok('"'),
        "apos" => return Ok('\''),
        _ => match (name.strip_prefix("#x"), name.strip_prefix('#')) {
            (Some(hex), _) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u32::from_str_radix(hex, 16).ok()
            }
            (None, Some(dec)) if !dec.is_empty() && dec.bytes().all(|b| b.is_ascii_digit()) => {
                dec.parse::<u32>().ok()
            }
            (Some(_), _) | (None, Some(_)) => None,
            (None, None) => {
                return Err(ProtoError::malformed(format!(
                    "unknown entity &{};",
                    shown(name)
                )))
            }
        },
    };
    code.and_then(char::from_u32)
        .filter(|&c| is_xml_char(c))
        .ok_or_else(|| {
            ProtoError::malformed(format!(
                "&{}; is not a reference to an XML character",
                shown(name)
            ))
        })
}

/// Appends `s` escaped for a double-quoted attribute value. Tab, line feed and carriage return
/// are written as character references, so that they survive attribute-value normalization;
/// characters XML cannot carry at all become U+FFFD.
pub(crate) fn escape_attribute(out: &mut String, s: &str) {
    escape(out, s, true);
}

/// Appends `s` escaped as character data. A carriage return is written as a reference, so that
/// it survives line-end normalization; characters XML cannot carry at all become U+FFFD.
pub(crate) fn escape_text(out: &mut String, s: &str) {
    escape(out, s, false);
}

fn escape(out: &mut String, s: &str, attribute: bool) {
    // Most names and ids are plain printable ASCII: copy them at once.
    if s.bytes()
        .all(|b| (0x20..0x7F).contains(&b) && !matches!(b, b'&' | b'<' | b'>' | b'"'))
    {
        out.push_str(s);
        return;
    }
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let replacement = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' if attribute => "&quot;",
            '\t' if attribute => "&#9;",
            '\n' if attribute => "&#10;",
            '\r' => "&#13;",
            c if !is_xml_char(c) => "\u{FFFD}",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        out.push_str(replacement);
        run = i + c.len_utf8();
    }
    out.push_str(&s[run..]);
}

/// Splits the attribute part of a tag (what follows the name) into name and raw value pairs,
/// refusing what quick-xml lets through: attributes not separated by whitespace, a missing `=`,
/// an unquoted or unterminated value.
fn split_attributes(s: &str) -> Result<Vec<(&str, &str)>, ProtoError> {
    let b = s.as_bytes();
    let skip_space = |mut i: usize| {
        while b.get(i).copied().is_some_and(is_space) {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let name_start = skip_space(i);
        if name_start == b.len() {
            return Ok(out);
        }
        if name_start == i {
            return Err(ProtoError::malformed(
                "attributes must be separated by whitespace",
            ));
        }
        i = name_start;
        while b.get(i).is_some_and(|&c| !is_space(c) && c != b'=') {
            i += 1;
        }
        let name = &s[name_start..i];
        i = skip_space(i);
        if b.get(i) != Some(&b'=') {
            return Err(ProtoError::malformed(format!(
                "attribute {} has no value",
                shown(name)
            )));
        }
        i = skip_space(i + 1);
        let quote = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            Some(_) | None => {
                return Err(ProtoError::malformed(format!(
                    "the value of attribute {} is not quoted",
                    shown(name)
                )))
            }
        };
        let value_start = i + 1;
        let value_end = b[value_start..]
            .iter()
            .position(|&c| c == quote)
            .map(|n| value_start + n)
            .ok_or_else(|| ProtoError::malformed("an attribute value is not closed"))?;
        out.push((name, &s[value_start..value_end]));
        i = value_end + 1;
    }
}

/// The namespace bindings in scope. Lookups cost the same however many bindings a hostile input
/// piles up: each prefix has its own stack, and closing an element undoes exactly what it bound.
#[derive(Debug)]
struct Scopes {
    /// The default namespace declarations in force, innermost last; an empty namespace
    /// undeclares it.
    default: Vec<Rc<str>>,
    /// Each prefix's bindings, innermost last.
    prefixes: HashMap<Rc<str>, Vec<Rc<str>>>,
    /// What each binding bound (`None` for the default namespace), in binding order.
    undo: Vec<Option<Rc<str>>>,
    /// Where each open element's bindings start in `undo`.
    frames: Vec<usize>,
    /// The namespace of the `xml` prefix, shared.
    xml: Rc<str>,
}

impl Scopes {
    fn new(default_namespace: Option<&str>) -> Scopes {
        Scopes {
            default: default_namespace.map(Rc::from).into_iter().collect(),
            prefixes: HashMap::new(),
            undo: Vec::new(),
            frames: Vec::new(),
            xml: Rc::from(XML_NS),
        }
    }

    fn open(&mut self) {
        self.frames.push(self.undo.len());
    }

    fn close(&mut self) {
        let start = self.frames.pop().unwrap_or(0);
        while self.undo.len() > start {
            match self.undo.pop().flatten() {
                None => {
                    self.default.pop();
                }
                Some(prefix) => {
                    if let Some(stack) = self.prefixes.get_mut(&prefix) {
                        stack.pop();
                        if stack.is_empty() {
                            self.prefixes.remove(&prefix);
                        }
                    }
                }
            }
        }
    }

    fn bind(&mut self, prefix: Option<&str>, namespace: &str) {
        let namespace = Rc::from(namespace);
        match prefix {
            None => {
                self.default.push(namespace);
                self.undo.push(None);
            }
            Some(p) => {
                let p: Rc<str> = Rc::from(p);
                self.prefixes
                    .entry(Rc::clone(&p))
                    .or_default()
                    .push(namespace);
                self.undo.push(Some(p));
            }
        }
    }

    /// The namespace of a name with this prefix: `Ok(None)` for no namespace, `Err` for an
    /// undeclared prefix.
    fn resolve(&self, prefix: Option<&str>) -> Result<Option<Rc<str>>, ProtoError> {
        let namespace = match prefix {
            Some("xml") => return Ok(Some(Rc::clone(&self.xml))),
            None => self.default.last(),
            Some(p) => Some(self.prefixes.get(p).and_then(|s| s.last()).ok_or_else(|| {
                ProtoError::malformed(format!("namespace prefix {} is not declared", shown(p)))
            })?),
        };
        Ok(namespace.filter(|ns| !ns.is_empty()).map(Rc::clone))
    }
}

/// One attribute, value decoded.
#[derive(Debug)]
pub(crate) struct Attribute<'a> {
    /// The name as written (a QName; namespace declarations included).
    pub(crate) name: &'a str,
    /// The decoded, normalized value.
    pub(crate) value: Cow<'a, str>,
}

/// A start or empty-element tag, checked and resolved.
#[derive(Debug)]
pub(crate) struct Element<'a> {
    /// The name as written.
    pub(crate) qname: &'a str,
    /// The local part of the name.
    pub(crate) local: &'a str,
    /// The namespace the name resolves to.
    pub(crate) namespace: Option<Rc<str>>,
    /// The attributes in document order, namespace declarations included.
    pub(crate) attributes: Vec<Attribute<'a>>,
}

impl Element<'_> {
    /// Whether this element is `{namespace}local`.
    pub(crate) fn is(&self, namespace: &str, local: &str) -> bool {
        self.local == local && self.namespace.as_deref() == Some(namespace)
    }
}

/// What [`XmlReader::next`] found.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    /// A start tag.
    Start(Element<'a>),
    /// An empty-element tag.
    Empty(Element<'a>),
    /// An end tag (quick-xml has checked that it matches its start tag).
    End,
    /// Character data: as written, and decoded.
    Text { raw: &'a str, value: Cow<'a, str> },
    /// The content of a CDATA section, as written.
    CData(&'a str),
    /// A comment, a processing instruction or the XML declaration.
    Misc,
    /// The end of the input, with every element closed.
    Eof,
}

/// quick-xml's reader plus the checks listed in the module docs.
pub(crate) struct XmlReader<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    scopes: Scopes,
    depth: usize,
    /// Whether an XML declaration is allowed next (only at the very start of a document).
    declaration_allowed: bool,
}

impl<'a> XmlReader<'a> {
    /// A reader over a whole document.
    pub(crate) fn document(text: &'a str) -> XmlReader<'a> {
        XmlReader::new(text, true, None)
    }

    /// A reader over a fragment that will sit where `default_namespace` is the default
    /// namespace (an envelope payload sits in the envelope namespace).
    pub(crate) fn fragment(text: &'a str, default_namespace: &str) -> XmlReader<'a> {
        XmlReader::new(text, false, Some(default_namespace))
    }

    fn new(text: &'a str, document: bool, default_namespace: Option<&str>) -> XmlReader<'a> {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_comments = true;
        config.check_end_names = true;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = false;
        config.trim_text(false);
        XmlReader {
            text,
            reader,
            scopes: Scopes::new(default_namespace),
            depth: 0,
            declaration_allowed: document,
        }
    }

    /// The byte offset just after the last item read.
    pub(crate) fn position(&self) -> usize {
        usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    /// How many elements are open.
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// The part of the input `part` (a slice quick-xml borrowed from it) covers.
    fn slice(&self, part: &[u8]) -> Result<&'a str, ProtoError> {
        if part.is_empty() {
            return Ok("");
        }
        let start = (part.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        self.text
            .get(start..start.saturating_add(part.len()))
            .ok_or_else(|| ProtoError::malformed("the tokenizer reported text outside the input"))
    }

    /// The next item, checked.
    pub(crate) fn next(&mut self) -> Result<Item<'a>, ProtoError> {
        let event = match self.reader.read_event() {
            Ok(event) => event,
            Err(e) => return Err(self.fail(&e)),
        };
        let declaration_allowed = std::mem::replace(&mut self.declaration_allowed, false);
        match event {
            Event::Start(e) => {
                let element = self.element(self.slice(&e)?, false)?;
                self.depth += 1;
                Ok(Item::Start(element))
            }
            Event::Empty(e) => Ok(Item::Empty(self.element(self.slice(&e)?, true)?)),
            Event::End(_) => {
                self.scopes.close();
                self.depth = self
                    .depth
                    .checked_sub(1)
                    .ok_or_else(|| ProtoError::malformed("an end tag without a start tag"))?;
                Ok(Item::End)
            }
            Event::Text(t) => {
                let raw = self.slice(&t)?;
                if raw.contains("]]>") {
                    return Err(ProtoError::malformed("']]>' in text"));
                }
                Ok(Item::Text {
                    raw,
                    value: decode(raw, Context::Text)?,
                })
            }
            Event::CData(c) => Ok(Item::CData(self.slice(&c)?)),
            Event::Comment(c) => {
                if self.slice(&c)?.ends_with('-') {
                    return Err(ProtoError::malformed("a comment may not end with '--->'"));
                }
                Ok(Item::Misc)
            }
            Event::PI(pi) => {
                let raw = self.slice(&pi)?;
                let target = raw.split(|c: char| c.is_ascii_whitespace()).next();
                match target {
                    Some(t) if is_ncname(t) && !t.eq_ignore_ascii_case("xml") => Ok(Item::Misc),
                    Some(_) | None => Err(ProtoError::malformed(format!(
                        "{} is not a processing instruction target",
                        shown(target.unwrap_or(""))
                    ))),
                }
            }
            Event::Decl(d) => {
                if !declaration_allowed {
                    return Err(ProtoError::malformed(
                        "an XML declaration may only open a document",
                    ));
                }
                check_declaration(self.slice(&d)?)?;
                Ok(Item::Misc)
            }
            Event::DocType(_) => Err(ProtoError::Dtd),
            Event::Eof if self.depth > 0 => {
                Err(ProtoError::malformed("the input ends inside an element"))
            }
            Event::Eof => Ok(Item::Eof),
        }
    }

    /// Maps a quick-xml error; a markup declaration it cannot read is a DTD fragment.
    fn fail(&self, e: &quick_xml::Error) -> ProtoError {
        let at = usize::try_from(self.reader.error_position()).unwrap_or(usize::MAX);
        let rest = self.text.get(at..).unwrap_or("");
        let declaration = DECLARATIONS.iter().any(|d| {
            rest.get(..d.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(d))
        });
        if declaration {
            ProtoError::Dtd
        } else {
            ProtoError::malformed(e.to_string())
        }
    }

    /// Checks a tag's name and attributes, opens its namespace scope (closed again at once for an
    /// empty-element tag) and resolves its name.
    fn element(&mut self, raw: &'a str, empty: bool) -> Result<Element<'a>, ProtoError> {
        let name_end = raw.bytes().position(is_space).unwrap_or(raw.len());
        let (qname, rest) = raw.split_at(name_end);
        let (prefix, local) = split_qname(qname)
            .filter(|(p, _)| *p != Some("xmlns"))
            .ok_or_else(|| {
                ProtoError::malformed(format!("{} is not an element name", shown(qname)))
            })?;
        let pairs = split_attributes(rest)?;
        let mut attributes = Vec::with_capacity(pairs.len());
        let mut prefixed = Vec::new();
        self.scopes.open();
        for (name, raw_value) in pairs {
            let (attr_prefix, attr_local) = split_qname(name).ok_or_else(|| {
                ProtoError::malformed(format!("{} is not an attribute name", shown(name)))
            })?;
            let value = decode(raw_value, Context::Attribute)?;
            match (attr_prefix, attr_local) {
                (None, "xmlns") => {
                    reserved_namespace("", &value)?;
                    self.scopes.bind(None, &value);
                }
                (Some("xmlns"), "xml") if value == XML_NS => {}
                (Some("xmlns"), declared) => {
                    if declared == "xmlns" || declared == "xml" || value.is_empty() {
                        return Err(ProtoError::malformed(format!(
                            "the namespace prefix {} cannot be bound to {}",
                            shown(declared),
                            shown(&value)
                        )));
                    }
                    reserved_namespace(declared, &value)?;
                    self.scopes.bind(Some(declared), &value);
                }
                (Some(p), l) => prefixed.push((p, l)),
                (None, _) => {}
            }
            attributes.push(Attribute { name, value });
        }
        if attributes.len() > 1 {
            let mut names: Vec<&str> = attributes.iter().map(|a| a.name).collect();
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(ProtoError::malformed(format!(
                    "attribute {} appears twice",
                    shown(w[0])
                )));
            }
        }
        if prefixed.len() > 1 {
            let mut expanded = Vec::with_capacity(prefixed.len());
            for (p, l) in prefixed {
                expanded.push((self.scopes.resolve(Some(p))?, l));
            }
            expanded.sort_unstable();
            if let Some(w) = expanded.windows(2).find(|w| w[0] == w[1]) {
                return Err(ProtoError::malformed(format!(
                    "attribute {} appears twice in one namespace",
                    shown(w[0].1)
                )));
            }
        } else if let Some((p, _)) = prefixed.first() {
            self.scopes.resolve(Some(p))?;
        }
        let namespace = self.scopes.resolve(prefix)?;
        if empty {
            self.scopes.close();
        }
        Ok(Element {
            qname,
            local,
            namespace,
            attributes,
        })
    }
}

/// Refuses binding a prefix (or the default namespace, `""`) to a reserved namespace.
fn reserved_namespace(prefix: &str, namespace: &str) -> Result<(), ProtoError> {
    if namespace == XML_NS || namespace == XMLNS_NS {
        return Err(ProtoError::malformed(format!(
            "the namespace prefix {} cannot be bound to {}",
            shown(prefix),
            shown(namespace)
        )));
    }
    Ok(())
}

/// Checks an XML declaration (`raw` is its content without `<?` and `?>`): version 1.0, UTF-8 if
/// an encoding is named, and nothing else but `standalone`.
fn check_declaration(raw: &str) -> Result<(), ProtoError> {
    let pairs = raw
        .strip_prefix("xml")
        .map(split_attributes)
        .transpose()?
        .unwrap_or_default();
    let mut pairs = pairs.into_iter().peekable();
    let bad = |what: &str| ProtoError::malformed(format!("XML declaration: {what}"));
    if pairs.next() != Some(("version", "1.0")) {
        return Err(bad("version=\"1.0\" must come first"));
    }
    if let Some((_, encoding)) = pairs.next_if(|(n, _)| *n == "encoding") {
        if !encoding.eq_ignore_ascii_case("utf-8") {
            return Err(bad("the encoding must be UTF-8"));
        }
    }
    if let Some((_, standalone)) = pairs.next_if(|(n, _)| *n == "standalone") {
        if standalone != "yes" && standalone != "no" {
            return Err(bad("standalone must be yes or no"));
        }
    }
    match pairs.next() {
        None => Ok(()),
        Some(_) => Err(bad("only version, encoding and standalone, in that order")),
    }
}

/// A parsed element of a small payload (control payloads are read through this tree).
#[derive(Debug)]
pub(crate) struct Node {
    /// Its namespace.
    pub(crate) namespace: Option<Rc<str>>,
    /// Its local name.
    pub(crate) local: String,
    /// Its attributes (name as written, decoded value), namespace declarations left out.
    pub(crate) attributes: Vec<(String, String)>,
    /// Its content; adjacent text and CDATA are merged into one `Text`.
    pub(crate) children: Vec<Child>,
}

/// The content of a [`Node`].
#[derive(Debug)]
pub(crate) enum Child {
    /// An element.
    Element(Node),
    /// Character data, decoded.
    Text(String),
}

fn push_text(children: &mut Vec<Child>, text: &str) {
    match children.last_mut() {
        Some(Child::Text(t)) => t.push_str(text),
        Some(Child::Element(_)) | None => children.push(Child::Text(text.to_owned())),
    }
}

/// Parses a payload fragment into a tree; refuses nesting deeper than `max_depth`.
pub(crate) fn parse_tree(
    xml: &str,
    envelope_namespace: &str,
    max_depth: usize,
) -> Result<Vec<Child>, ProtoError> {
    let mut reader = XmlReader::fragment(xml, envelope_namespace);
    let mut top = Vec::new();
    let mut open: Vec<Node> = Vec::new();
    loop {
        let item = reader.next()?;
        let element_depth = match &item {
            Item::Start(_) => reader.depth(),
            Item::Empty(_) => reader.depth() + 1,
            Item::End | Item::Text { .. } | Item::CData(_) | Item::Misc | Item::Eof => 0,
        };
        if element_depth > max_depth {
            return Err(ProtoError::TooDeep(max_depth));
        }
        let children = match open.last_mut() {
            Some(node) => &mut node.children,
            None => &mut top,
        };
        match item {
            Item::Start(e) => open.push(node(e)),
            Item::Empty(e) => children.push(Child::Element(node(e))),
            Item::End => {
                let closed = open
                    .pop()
                    .ok_or_else(|| ProtoError::malformed("an end tag without a start tag"))?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(Child::Element(closed)),
                    None => top.push(Child::Element(closed)),
                }
            }
            Item::Text { value, .. } => push_text(children, &value),
            Item::CData(raw) => push_text(children, &decode(raw, Context::CData)?),
            Item::Misc => {}
            Item::Eof => return Ok(top),
        }
    }
}

fn node(e: Element<'_>) -> Node {
    Node {
        namespace: e.namespace,
        local: e.local.to_owned(),
        attributes: e
            .attributes
            .into_iter()
            .filter(|a| a.name != "xmlns" && !a.name.starts_with("xmlns:"))
            .map(|a| (a.name.to_owned(), a.value.into_owned()))
            .collect(),
        children: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(xml: &str) -> Result<usize, ProtoError> {
        let mut r = XmlReader::document(xml);
        let mut n = 0;
        loop {
            match r.next()? {
                Item::Eof => return Ok(n),
                Item::Start(_)
                | Item::Empty(_)
                | Item::End
                | Item::Text { .. }
                | Item::CData(_)
                | Item::Misc => n += 1,
            }
        }
    }

    #[test]
    fn what_quick_xml_lets_through_is_refused_here() {
        for bad in [
            "<a b=\"1\"c=\"2\"/>",
            "<a b=\"<\"/>",
            "<1a/>",
            "<a:b:c/>",
            "<p:a/>",
            "<a p:b=\"1\"/>",
            "<a xmlns:p=\"urn:p\" xmlns:q=\"urn:p\" p:x=\"1\" q:x=\"2\"/>",
            "<a xmlns:p=\"\"/>",
            "<xmlns:a/>",
            "<a xmlns:xml=\"urn:x\"/>",
            "<a xmlns=\"http://www.w3.org/2000/xmlns/\"/>",
            "<a>]]></a>",
            "<a><!-- x ---></a>",
            "<a><!-- x -- y --></a>",
            "<a><?xml version=\"1.0\"?></a>",
            "<a><?XmL x?></a>",
            " <?xml version=\"1.0\"?><a/>",
            "<?xml version=\"1.1\"?><a/>",
            "<?xml version=\"1.0\" encoding=\"latin1\"?><a/>",
            "<a>&#0;</a>",
            "<a>&#xD800;</a>",
            "<a>&#x+41;</a>",
            "<a>&nbsp;</a>",
            "<a>& b</a>",
            "<a b='1' b='2'/>",
            "<a><b></a>",
            "<a>",
        ] {
            assert!(items(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn well_formed_documents_pass() {
        for good in [
            "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?><a/>",
            "<a xmlns:p=\"urn:p\" p:x=\"1\" x=\"2\" xml:lang=\"en\"><p:b/></a>",
            "<a b = '\"&#x41;&#65;&lt;'><![CDATA[<&]]><?pi x?><!-- c --></a >",
            "<a xmlns=\"urn:a\"><b xmlns=\"\"/></a>",
        ] {
            items(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn namespaces_are_scoped_to_their_element() {
        let xml = "<p:a xmlns:p=\"urn:1\" xmlns=\"urn:d\"><p:b xmlns:p=\"urn:2\"/><p:c/><e xmlns=\"\"><f/></e><g/></p:a>";
        let mut r = XmlReader::document(xml);
        let mut seen = Vec::new();
        loop {
            match r.next().unwrap() {
                Item::Start(e) | Item::Empty(e) => seen.push(format!(
                    "{}={}",
                    e.local,
                    e.namespace.as_deref().unwrap_or("-")
                )),
                Item::Eof => break,
                Item::End | Item::Text { .. } | Item::CData(_) | Item::Misc => {}
            }
        }
        assert_eq!(
            seen,
            ["a=urn:1", "b=urn:2", "c=urn:1", "e=-", "f=-", "g=urn:d"]
        );
        assert!(items("<a xmlns:p=\"urn:p\"/><p:b/>").is_err());
    }

    #[test]
    fn markup_declarations_are_dtds() {
        assert_eq!(items("<a><!ENTITY x 'y'></a>"), Err(ProtoError::Dtd));
        assert_eq!(items("<!DOCTYPE a><a/>"), Err(ProtoError::Dtd));
        assert_eq!(items("<a><!doctype a></a>"), Err(ProtoError::Dtd));
    }

    #[test]
    fn values_are_decoded_like_a_conforming_parser_does() {
        let attr = |s| decode(s, Context::Attribute).unwrap().into_owned();
        assert_eq!(attr("a\tb\r\nc\rd&#10;e&amp;"), "a b c d\ne&");
        let text = |s| decode(s, Context::Text).unwrap().into_owned();
        assert_eq!(text("a\r\nb\rc&#13;&#x1F600;"), "a\nb\nc\r\u{1F600}");
        assert!(decode("\u{e9}", Context::Text).is_ok_and(|c| matches!(c, Cow::Borrowed(_))));
    }

    #[test]
    fn escaping_survives_decoding() {
        let s = "a\t\"b'<c>&\r\n\u{1}\u{e9}]]>";
        let mut attr = String::new();
        escape_attribute(&mut attr, s);
        let back = decode(&attr, Context::Attribute).unwrap();
        assert_eq!(back, s.replace('\u{1}', "\u{FFFD}"));
        let mut text = String::new();
        escape_text(&mut text, s);
        assert!(!text.contains("]]>"));
        assert_eq!(
            decode(&text, Context::Text).unwrap(),
            s.replace('\u{1}', "\u{FFFD}")
        );
    }

    #[test]
    fn characters_xml_forbids_are_found() {
        assert!(check_chars("a\tb\nc\r\u{FFFD}\u{10FFFF}").is_ok());
        for bad in ["\u{0}", "a\u{1F}", "\u{FFFE}", "x\u{FFFF}"] {
            assert!(check_chars(bad).is_err(), "{bad:?}");
        }
    }
}
