//! Why an envelope or payload was refused.
//!
//! Every variant means "bad input": the bytes came from a peer (or a local client) that does not
//! speak the protocol, or speaks it wrongly. Refusing never changes any state; the caller drops
//! the input and, where there is someone to tell, answers with an error. Every message renders as
//! one line, whatever the input held, and quotes at most a short, escaped excerpt of it.

/// A refused envelope or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The input, or its payload, is larger than the [`Limits`](crate::Limits) allow. The envelope
    /// size is checked before any parsing; the payload size as soon as the payload is that long.
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// `envelope` or `payload`.
        what: &'static str,
        /// Its size in bytes (for a payload cut short by the check: at least this many).
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A document type declaration (`<!DOCTYPE`) or a markup declaration (`<!ENTITY`,
    /// `<!ELEMENT`, `<!ATTLIST`, `<!NOTATION`) somewhere in the input, payload included. Refused
    /// outright, so that no entity is ever declared or expanded.
    #[error("DTDs and entity declarations are not allowed")]
    Dtd,
    /// The root element is not `<envelope>` in the envelope namespace
    /// ([`NAMESPACE`](crate::NAMESPACE)) declared as the default namespace: another version of
    /// the protocol, or not the protocol at all.
    #[error("the root element must be <envelope xmlns=\"{}\">", crate::NAMESPACE)]
    Namespace,
    /// Not well-formed XML (or not namespace-well-formed): bad syntax, a character XML does not
    /// allow, an unknown entity, mismatched tags, text where the header allows none, content after
    /// the root element, or input that is not UTF-8.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// A required attribute or element of the header (or of a control payload) is absent. The
    /// name is the attribute or element, e.g. `id`, `sender`, `payload`.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field is present but unusable (a bad UUID, a number out of range, an unknown kind, an
    /// empty name), or a field the header does not define is present (strict header).
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field as a path, e.g. `ttl`, `sender/@instance`, `target`.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// Elements in the payload nest deeper than [`Limits::max_depth`](crate::Limits::max_depth).
    #[error("the payload nests deeper than {0} levels")]
    TooDeep(usize),
}

impl ProtoError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ProtoError {
        ProtoError::InvalidField {
            field: field.into(),
            reason: one_line(&reason.into()),
        }
    }

    pub(crate) fn malformed(reason: impl AsRef<str>) -> ProtoError {
        ProtoError::Malformed(one_line(reason.as_ref()))
    }
}

/// The longest excerpt of the input an error message quotes.
const EXCERPT_CHARS: usize = 48;
/// The longest error message, so that a hostile input cannot flood a log through it.
const MESSAGE_CHARS: usize = 240;

/// A short, quoted, escaped excerpt of input-derived text for an error message.
pub(crate) fn shown(s: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// Makes `s` a single bounded line: control characters are escaped and the length is capped.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MESSAGE_CHARS));
    for (i, c) in s.chars().enumerate() {
        if i == MESSAGE_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
