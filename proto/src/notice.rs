//! Failure notices (namespace [`NOTICE_NAMESPACE`]): what an agent broadcasts when it confirms a
//! member dead or finds a fault of its own, after the seeds' failure-indication message (failed
//! part, its id and address, the time, and a level that decides who is woken up).
//!
//! A notice travels as the payload of an `event` envelope from the [`NOTICE_APP`] application to
//! every member; `proto/notice.xsd` is its schema.

use std::fmt;
use std::str::FromStr;

use crate::control::{attributes, named_element, number, required, text_content};
use crate::error::shown;
use crate::{xml, Payload, ProtoError};

/// The namespace of notice payloads; the version is part of it.
pub const NOTICE_NAMESPACE: &str = "urn:dci:notice:1";

/// The application name that sends and receives notices.
pub const NOTICE_APP: &str = "failure-notice";

/// Longest description kept in a notice, in bytes.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// How bad a failure is; decides the alert (the seeds' four levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Logged only (e.g. a short overload).
    Temporary,
    /// Logged, worth a look (e.g. sustained degradation).
    Moderate,
    /// A part failed (e.g. disk errors); the operator is paged.
    Serious,
    /// A whole node is down; the operator is paged.
    SystemDown,
}

impl Level {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Temporary => "temporary",
            Level::Moderate => "moderate",
            Level::Serious => "serious",
            Level::SystemDown => "system-down",
        }
    }

    /// Whether the operator is paged for this level.
    pub fn pages(self) -> bool {
        matches!(self, Level::Serious | Level::SystemDown)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Level, ProtoError> {
        Ok(match s {
            "temporary" => Level::Temporary,
            "moderate" => Level::Moderate,
            "serious" => Level::Serious,
            "system-down" => Level::SystemDown,
            other => {
                return Err(ProtoError::invalid(
                    "notice/@level",
                    format!(
                        "{} is not system-down, serious, moderate or temporary",
                        shown(other)
                    ),
                ))
            }
        })
    }
}

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// A whole node (agent and host).
    Node,
    /// A disk or the data dir.
    Disk,
    /// A peerlet that keeps crashing.
    Peerlet,
    /// A resource figure past its threshold.
    Resource,
    /// A network link.
    Network,
}

impl Part {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Node => "node",
            Part::Disk => "disk",
            Part::Peerlet => "peerlet",
            Part::Resource => "resource",
            Part::Network => "network",
        }
    }
}

impl FromStr for Part {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Part, ProtoError> {
        Ok(match s {
            "node" => Part::Node,
            "disk" => Part::Disk,
            "peerlet" => Part::Peerlet,
            "resource" => Part::Resource,
            "network" => Part::Network,
            other => {
                return Err(ProtoError::invalid(
                    "notice/@part",
                    format!(
                        "{} is not node, disk, peerlet, resource or network",
                        shown(other)
                    ),
                ))
            }
        })
    }
}

/// One failure notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureNotice {
    /// How bad.
    pub level: Level,
    /// What kind of part failed.
    pub part: Part,
    /// The failed part's id: a node id, a device, a peerlet type, a metric.
    pub id: String,
    /// The failed node's name (its blade name), when the part is on a known node.
    pub name: Option<String>,
    /// Where the failed part is: the node's address, a path.
    pub address: Option<String>,
    /// When the failure was seen, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened, for people; one line, at most [`MAX_DETAIL_BYTES`].
    pub detail: String,
}

impl FailureNotice {
    /// The payload, `<notice xmlns="urn:dci:notice:1" .../>`. Line breaks and control characters
    /// in the detail become spaces, and it is cut to [`MAX_DETAIL_BYTES`].
    pub fn to_payload(&self) -> Payload {
        let mut s = format!(
            "<notice xmlns=\"{NOTICE_NAMESPACE}\" level=\"{}\" part=\"{}\" at=\"{}\" id=\"",
            self.level,
            self.part.as_str(),
            self.at_ms
        );
        xml::escape_attribute(&mut s, &self.id);
        s.push('"');
        for (name, value) in [("name", &self.name), ("address", &self.address)] {
            if let Some(v) = value {
                s.push(' ');
                s.push_str(name);
                s.push_str("=\"");
                xml::escape_attribute(&mut s, v);
                s.push('"');
            }
        }
        s.push('>');
        xml::escape_text(&mut s, &one_line(&self.detail));
        s.push_str("</notice>");
        Payload::trusted(s)
    }

    /// Reads a notice payload; refuses anything `proto/notice.xsd` does not allow.
    pub fn from_payload(payload: &Payload) -> Result<FailureNotice, ProtoError> {
        let root = named_element(payload, "notice", NOTICE_NAMESPACE)?;
        let [level, part, at, id, name, address] = attributes(
            &root,
            "notice",
            ["level", "part", "at", "id", "name", "address"],
        )?;
        let detail = text_content(&root, "notice")?;
        if detail.len() > MAX_DETAIL_BYTES {
            return Err(ProtoError::invalid(
                "notice",
                format!("detail longer than {MAX_DETAIL_BYTES} bytes"),
            ));
        }
        let id = required("notice/@id", id)?;
        if id.is_empty() {
            return Err(ProtoError::invalid("notice/@id", "empty"));
        }
        Ok(FailureNotice {
            level: required("notice/@level", level)?.parse()?,
            part: required("notice/@part", part)?.parse()?,
            at_ms: number("notice/@at", at)?,
            id: id.to_owned(),
            name: name.map(str::to_owned),
            address: address.map(str::to_owned),
            detail,
        })
    }
}

fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_DETAIL_BYTES {
        let mut cut = MAX_DETAIL_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> FailureNotice {
        FailureNotice {
            level: Level::SystemDown,
            part: Part::Node,
            id: "12D3KooWx".into(),
            name: Some("blade-<03>".into()),
            address: Some("/ip4/10.0.0.3/tcp/7946".into()),
            at_ms: 1_795_305_600_900,
            detail: "probes & relays failed".into(),
        }
    }

    #[test]
    fn notices_round_trip() {
        let n = notice();
        let payload = n.to_payload();
        Payload::new(payload.as_str()).unwrap();
        assert_eq!(FailureNotice::from_payload(&payload).unwrap(), n);
        let bare = FailureNotice {
            name: None,
            address: None,
            detail: String::new(),
            ..notice()
        };
        assert_eq!(
            FailureNotice::from_payload(&bare.to_payload()).unwrap(),
            bare
        );
    }

    #[test]
    fn a_long_multiline_detail_becomes_one_bounded_line() {
        let n = FailureNotice {
            detail: format!("first\nsecond {}", "é".repeat(MAX_DETAIL_BYTES)),
            ..notice()
        };
        let back = FailureNotice::from_payload(&n.to_payload()).unwrap();
        assert!(back.detail.starts_with("first second "));
        assert!(back.detail.len() <= MAX_DETAIL_BYTES);
    }

    #[test]
    fn bad_levels_parts_and_shapes_are_refused() {
        let ns = NOTICE_NAMESPACE;
        for bad in [
            format!("<notice xmlns=\"{ns}\" level=\"panic\" part=\"node\" at=\"1\" id=\"a\"/>"),
            format!("<notice xmlns=\"{ns}\" level=\"serious\" part=\"cpu\" at=\"1\" id=\"a\"/>"),
            format!("<notice xmlns=\"{ns}\" level=\"serious\" part=\"node\" at=\"x\" id=\"a\"/>"),
            format!("<notice xmlns=\"{ns}\" level=\"serious\" part=\"node\" at=\"1\"/>"),
            format!("<notice xmlns=\"{ns}\" level=\"serious\" part=\"node\" at=\"1\" id=\"\"/>"),
            format!("<notice xmlns=\"{ns}\" level=\"serious\" part=\"node\" at=\"1\" id=\"a\" x=\"1\"/>"),
            format!("<notice xmlns=\"{ns}\" level=\"serious\" part=\"node\" at=\"1\" id=\"a\"><b/></notice>"),
            "<notice xmlns=\"urn:other\" level=\"serious\" part=\"node\" at=\"1\" id=\"a\"/>".into(),
        ] {
            let payload = Payload::new(bad.as_str()).unwrap();
            assert!(FailureNotice::from_payload(&payload).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn only_the_two_worst_levels_page() {
        assert!(Level::SystemDown.pages() && Level::Serious.pages());
        assert!(!Level::Moderate.pages() && !Level::Temporary.pages());
    }
}
