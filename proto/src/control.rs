//! Typed payloads of the control socket (namespace `urn:dci:control:1`), shared by the agent and
//! `dcish` so that both sides agree on every command. Each command is one element; a new command is
//! a new [`ControlRequest`] variant, its element in `proto/control.xsd`, and its reply type here.

use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::{Payload, ProtoError};

/// The control payload namespace.
pub const CONTROL_NAMESPACE: &str = "urn:dci:control:1";

/// Member states as spelled on the wire.
pub const STATES: [&str; 4] = ["alive", "suspect", "dead", "left"];
/// Member roles as spelled on the wire.
pub const ROLES: [&str; 2] = ["active", "spare"];

/// A command sent by `dcish` to its local agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// The member table: `<nodes/>`.
    Nodes,
}

impl ControlRequest {
    /// The request payload.
    pub fn to_payload(&self) -> Payload {
        match self {
            ControlRequest::Nodes => {
                Payload::trusted(format!("<nodes xmlns=\"{CONTROL_NAMESPACE}\"/>"))
            }
        }
    }

    /// Reads a request payload.
    pub fn from_payload(payload: &Payload) -> Result<ControlRequest, ProtoError> {
        let mut reader = Reader::from_str(payload.as_str());
        loop {
            match reader.read_event()? {
                Event::Start(e) | Event::Empty(e) => {
                    check_ns(&e)?;
                    return match e.local_name().as_ref() {
                        b"nodes" => Ok(ControlRequest::Nodes),
                        other => Err(ProtoError::invalid(
                            "command",
                            format!("unknown command <{}>", String::from_utf8_lossy(other)),
                        )),
                    };
                }
                Event::Eof => return Err(ProtoError::MissingField("command")),
                Event::Text(_)
                | Event::End(_)
                | Event::CData(_)
                | Event::Comment(_)
                | Event::Decl(_)
                | Event::PI(_)
                | Event::DocType(_) => {}
            }
        }
    }
}

/// One row of `dcish nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Node id.
    pub id: String,
    /// Blade name.
    pub name: String,
    /// One of [`STATES`].
    pub state: String,
    /// One of [`ROLES`].
    pub role: String,
    /// Zone.
    pub zone: String,
    /// The member's incarnation (bumped at each start).
    pub incarnation: u64,
    /// Milliseconds since the member was last heard from; 0 for the answering node itself.
    pub last_heard_ms: u64,
    /// Agent version.
    pub version: String,
    /// Listen addresses.
    pub addrs: Vec<String>,
}

/// The reply payload of [`ControlRequest::Nodes`].
pub fn members_to_payload(members: &[MemberInfo]) -> Payload {
    let mut s = format!("<members xmlns=\"{CONTROL_NAMESPACE}\">");
    for m in members {
        s.push_str(&format!(
            "<member id=\"{}\" name=\"{}\" state=\"{}\" role=\"{}\" zone=\"{}\" incarnation=\"{}\" last-heard-ms=\"{}\" version=\"{}\"",
            escape(m.id.as_str()),
            escape(m.name.as_str()),
            escape(m.state.as_str()),
            escape(m.role.as_str()),
            escape(m.zone.as_str()),
            m.incarnation,
            m.last_heard_ms,
            escape(m.version.as_str()),
        ));
        if m.addrs.is_empty() {
            s.push_str("/>");
        } else {
            s.push('>');
            for a in &m.addrs {
                s.push_str(&format!("<addr>{}</addr>", escape(a.as_str())));
            }
            s.push_str("</member>");
        }
    }
    s.push_str("</members>");
    Payload::trusted(s)
}

fn attr(e: &BytesStart<'_>, name: &'static str) -> Result<String, ProtoError> {
    for a in e.attributes().with_checks(true) {
        let a = a?;
        if a.key.as_ref() == name.as_bytes() {
            return Ok(a.unescape_value()?.into_owned());
        }
    }
    Err(ProtoError::MissingField(name))
}

fn check_ns(e: &BytesStart<'_>) -> Result<(), ProtoError> {
    match attr(e, "xmlns") {
        Ok(ns) if ns == CONTROL_NAMESPACE => Ok(()),
        Ok(_) | Err(_) => Err(ProtoError::invalid(
            "payload",
            format!("expected namespace {CONTROL_NAMESPACE}"),
        )),
    }
}

fn member_from(e: &BytesStart<'_>) -> Result<MemberInfo, ProtoError> {
    let num = |name: &'static str| -> Result<u64, ProtoError> {
        let v = attr(e, name)?;
        v.parse().map_err(|_| {
            ProtoError::invalid(format!("member/@{name}"), format!("'{v}' is not a number"))
        })
    };
    let state = attr(e, "state")?;
    if !STATES.contains(&state.as_str()) {
        return Err(ProtoError::invalid(
            "member/@state",
            format!("unknown state '{state}'"),
        ));
    }
    let role = attr(e, "role")?;
    if !ROLES.contains(&role.as_str()) {
        return Err(ProtoError::invalid(
            "member/@role",
            format!("unknown role '{role}'"),
        ));
    }
    Ok(MemberInfo {
        id: attr(e, "id")?,
        name: attr(e, "name")?,
        state,
        role,
        zone: attr(e, "zone")?,
        incarnation: num("incarnation")?,
        last_heard_ms: num("last-heard-ms")?,
        version: attr(e, "version")?,
        addrs: Vec::new(),
    })
}

/// Reads the reply payload of [`ControlRequest::Nodes`].
pub fn members_from_payload(payload: &Payload) -> Result<Vec<MemberInfo>, ProtoError> {
    let mut reader = Reader::from_str(payload.as_str());
    let mut members = Vec::new();
    let mut in_addr = false;
    let mut seen_root = false;
    loop {
        match reader.read_event()? {
            Event::Start(e) | Event::Empty(e) if !seen_root => {
                if e.local_name().as_ref() != b"members" {
                    return Err(ProtoError::MissingField("members"));
                }
                check_ns(&e)?;
                seen_root = true;
            }
            Event::Start(e) if e.local_name().as_ref() == b"member" => {
                members.push(member_from(&e)?)
            }
            Event::Empty(e) if e.local_name().as_ref() == b"member" => {
                members.push(member_from(&e)?)
            }
            Event::Start(e) if e.local_name().as_ref() == b"addr" => in_addr = true,
            Event::End(e) if e.local_name().as_ref() == b"addr" => in_addr = false,
            Event::Text(t) if in_addr => {
                let m = members
                    .last_mut()
                    .ok_or_else(|| ProtoError::Malformed("<addr> outside <member>".into()))?;
                m.addrs.push(t.unescape()?.into_owned());
            }
            Event::Eof => break,
            Event::Start(_)
            | Event::Empty(_)
            | Event::End(_)
            | Event::Text(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
        }
    }
    if !seen_root {
        return Err(ProtoError::MissingField("members"));
    }
    Ok(members)
}

/// An error payload: a machine-readable code and a one-line message.
pub fn error_payload(code: &str, message: &str) -> Payload {
    let message = message.replace('\n', " ");
    Payload::trusted(format!(
        "<error xmlns=\"{CONTROL_NAMESPACE}\" code=\"{}\">{}</error>",
        escape(code),
        escape(message.as_str())
    ))
}

/// Reads an error payload: `(code, message)`, or `None` if the payload is not one.
pub fn error_from_payload(payload: &Payload) -> Option<(String, String)> {
    let mut reader = Reader::from_str(payload.as_str());
    let mut code = None;
    let mut message = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) | Event::Empty(e) if code.is_none() => {
                if e.local_name().as_ref() != b"error" || check_ns(&e).is_err() {
                    return None;
                }
                code = Some(attr(&e, "code").ok()?);
            }
            Event::Text(t) => message.push_str(&t.unescape().ok()?),
            Event::Eof => break,
            Event::Start(_)
            | Event::Empty(_)
            | Event::End(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
        }
    }
    Some((code?, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> MemberInfo {
        MemberInfo {
            id: "12D3KooWx".into(),
            name: "blade-01".into(),
            state: "alive".into(),
            role: "spare".into(),
            zone: "z&1".into(),
            incarnation: 3,
            last_heard_ms: 120,
            version: "0.1.0".into(),
            addrs: vec![
                "/ip4/127.0.0.1/tcp/7946".into(),
                "/ip4/10.0.0.1/tcp/7946".into(),
            ],
        }
    }

    #[test]
    fn the_member_table_round_trips() {
        let mut bare = member();
        bare.addrs.clear();
        let rows = vec![member(), bare];
        let payload = members_to_payload(&rows);
        Payload::new(payload.as_str()).unwrap();
        assert_eq!(members_from_payload(&payload).unwrap(), rows);
    }

    #[test]
    fn an_unknown_state_is_refused() {
        let mut m = member();
        m.state = "zombie".into();
        assert!(members_from_payload(&members_to_payload(&[m])).is_err());
    }

    #[test]
    fn requests_and_errors_round_trip() {
        let p = ControlRequest::Nodes.to_payload();
        assert_eq!(
            ControlRequest::from_payload(&p).unwrap(),
            ControlRequest::Nodes
        );
        let e = error_payload("unknown-command", "no <such> command\nreally");
        assert_eq!(
            error_from_payload(&e).unwrap(),
            ("unknown-command".into(), "no <such> command really".into())
        );
        assert!(error_from_payload(&p).is_none());
    }

    #[test]
    fn unknown_commands_and_foreign_namespaces_are_refused() {
        let unknown = Payload::new(format!("<reboot xmlns=\"{CONTROL_NAMESPACE}\"/>")).unwrap();
        assert!(ControlRequest::from_payload(&unknown).is_err());
        let foreign = Payload::new("<nodes xmlns=\"urn:other\"/>").unwrap();
        assert!(ControlRequest::from_payload(&foreign).is_err());
        assert!(ControlRequest::from_payload(&Payload::empty()).is_err());
    }
}
