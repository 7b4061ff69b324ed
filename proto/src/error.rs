//! Why an envelope or payload was refused. Refusal never changes any state: the caller drops the
//! input and answers with an error.

/// A refused envelope or payload; each renders as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The input (or its payload) is larger than the limits allow; checked before parsing.
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// `envelope` or `payload`.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A DTD or entity declaration: refused outright, so no entity is ever expanded.
    #[error("DTDs and entity declarations are not allowed")]
    Dtd,
    /// The root element is not in the envelope namespace.
    #[error("the root element must be <envelope xmlns=\"{}\">", crate::NAMESPACE)]
    Namespace,
    /// Not well-formed XML, or the wrong element structure.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// A required attribute or element is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field is present but its value is unusable, or an unknown field is present.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// Elements nest deeper than the limit.
    #[error("XML nests deeper than {0} levels")]
    TooDeep(usize),
}

impl ProtoError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ProtoError {
        ProtoError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<quick_xml::Error> for ProtoError {
    fn from(e: quick_xml::Error) -> Self {
        ProtoError::Malformed(e.to_string().replace('\n', " "))
    }
}

impl From<quick_xml::events::attributes::AttrError> for ProtoError {
    fn from(e: quick_xml::events::attributes::AttrError) -> Self {
        ProtoError::Malformed(e.to_string())
    }
}
